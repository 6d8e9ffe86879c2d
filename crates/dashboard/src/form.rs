//! Submitted forms. Several fields repeat (the key/value rows), which
//! `serde_urlencoded` cannot express, so forms are kept as ordered pairs.

/// An `application/x-www-form-urlencoded` body.
pub(crate) struct Form(Vec<(String, String)>);

impl Form {
    /// Parses a body; malformed escapes are kept as they are.
    pub(crate) fn parse(body: &[u8]) -> Self {
        Self(form_urlencoded::parse(body).into_owned().collect())
    }

    /// The first value of `name`, or `""`.
    pub(crate) fn get(&self, name: &str) -> &str {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map_or("", |(_, v)| v.as_str())
    }

    /// Every value of `name`, in order.
    pub(crate) fn all(&self, name: &str) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_fields_keep_their_order() {
        let f = Form::parse(b"k=A&v=1&k=B&v=x%3Dy+z");
        assert_eq!(f.all("k"), ["A", "B"]);
        assert_eq!(f.all("v"), ["1", "x=y z"]);
        assert_eq!(f.get("missing"), "");
    }
}
