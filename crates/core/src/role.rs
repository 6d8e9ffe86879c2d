//! Roles: what a token may do.
//!
//! One definition for the store (which keeps [`Role::as_str`] in its rows),
//! the service layer (which checks [`Role::includes`]), the JSON API and the
//! SDK (which send the same lowercase word), so a role cannot mean one thing
//! on one side of the wire and another on the other.

use std::{fmt, str::FromStr};

use serde::{Deserialize, Serialize};

use crate::Error;

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema), schema(as = RoleName))]
#[non_exhaustive]
pub enum Role {
    /// Everything in its workspace, including tokens and environments.
    Admin,
    /// Read and write secrets, and run code with them.
    Developer,
    /// Read secrets' metadata and values, nothing else.
    Reader,
}

impl Role {
    /// `admin`, `developer` or `reader`: the stored, sent and displayed form.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Developer => "developer",
            Role::Reader => "reader",
        }
    }

    /// Parses the stored form exactly; a store row is never taken loosely.
    /// People's input goes through [`FromStr`], which ignores case.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "admin" => Some(Role::Admin),
            "developer" => Some(Role::Developer),
            "reader" => Some(Role::Reader),
            _ => None,
        }
    }

    /// Whether a token of this role may do what `role` may: each role can
    /// do everything of the ones below it (reader < developer < admin).
    pub fn includes(self, role: Role) -> bool {
        self.rank() >= role.rank()
    }

    fn rank(self) -> u8 {
        match self {
            Role::Reader => 0,
            Role::Developer => 1,
            Role::Admin => 2,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        Role::parse(&s.to_ascii_lowercase()).ok_or_else(|| {
            Error::invalid(format!(
                "Invalid role '{}': use admin, developer or reader",
                crate::rules::echo(s)
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_agree() {
        for role in [Role::Admin, Role::Developer, Role::Reader] {
            assert_eq!(Role::parse(role.as_str()), Some(role));
            assert_eq!(role.to_string().parse::<Role>().unwrap(), role);
            let json = serde_json::to_string(&role).unwrap();
            assert_eq!(json, format!("\"{}\"", role.as_str()));
            assert_eq!(serde_json::from_str::<Role>(&json).unwrap(), role);
        }
        assert_eq!(Role::parse("Admin"), None);
        assert_eq!("Developer".parse::<Role>().unwrap(), Role::Developer);
        let e = "root".parse::<Role>().unwrap_err();
        assert_eq!(
            e.message(),
            "Invalid role 'root': use admin, developer or reader"
        );
    }

    #[test]
    fn roles_include_the_ones_below() {
        assert!(Role::Admin.includes(Role::Developer));
        assert!(Role::Developer.includes(Role::Reader));
        assert!(Role::Developer.includes(Role::Developer));
        assert!(!Role::Reader.includes(Role::Developer));
        assert!(!Role::Developer.includes(Role::Admin));
    }
}
