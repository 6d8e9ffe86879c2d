//! Pasted `.env` files and JSON objects, read the way the CLI reads
//! `--from-dotenv` and `--from-json`.
//!
//! A `.env` file goes through [`dotenv::parse_isolated`], so `${NAME}` sees
//! only the pasted file and never the server's own environment; a key
//! without a value becomes an empty string, as in Modal's
//! `Secret.from_dotenv`. JSON must be an object of strings, as Modal's
//! `secret create --from-json` requires. Messages never repeat a value.

use latchkey_core::{dotenv, rules};

/// The entries of a pasted text, in order (JSON keys in the order of the
/// parsed object), or why it was refused.
pub(crate) fn parse(text: &str) -> Result<Vec<(String, String)>, String> {
    let trimmed = text.trim_start_matches('\u{feff}').trim_start();
    if trimmed.starts_with('{') {
        let object: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(trimmed).map_err(|e| format!("Invalid JSON: {e}"))?;
        object
            .into_iter()
            .map(|(key, value)| match value {
                serde_json::Value::String(s) => Ok((key, s)),
                _ => Err(format!(
                    "Non-string value for key '{}': every JSON value must be a string",
                    rules::echo(&key)
                )),
            })
            .collect()
    } else if trimmed.starts_with('[') {
        Err("Invalid JSON: expected an object of keys to string values".to_owned())
    } else {
        dotenv::parse_isolated(text)
            .map(dotenv::into_env_dict)
            .map_err(|e| {
                format!(
                    "Invalid .env: {}",
                    e.to_string().trim_start_matches("invalid .env file: ")
                )
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dotenv_is_isolated_from_the_server_environment() {
        std::env::set_var("LATCHKEY_DASHBOARD_TEST_OUTER", "leak");
        let got =
            parse("A=1\nexport B=\"${A}-x\"\nC=${LATCHKEY_DASHBOARD_TEST_OUTER}\nD\n").unwrap();
        assert_eq!(
            got,
            [("A", "1"), ("B", "1-x"), ("C", ""), ("D", "")]
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
        );
    }

    #[test]
    fn json_objects_of_strings() {
        let got = parse(" {\"A\": \"1\", \"B\": \"two words\"}").unwrap();
        assert_eq!(got.len(), 2);
        let e = parse("{\"A\": 1}").unwrap_err();
        assert!(e.contains("Non-string value for key 'A'"), "{e}");
        assert!(parse("{\"A\": ").unwrap_err().starts_with("Invalid JSON"));
        assert!(parse("[1]").unwrap_err().starts_with("Invalid JSON"));
    }

    #[test]
    fn dotenv_errors_name_the_line_not_the_value() {
        let e = parse("A=1\nB=\"hunter2\n").unwrap_err();
        assert!(e.contains("line 2") && !e.contains("hunter2"), "{e}");
    }
}
