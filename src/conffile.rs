//! The `key = value` configuration files of swtpm_setup and its local CA
//! (`swtpm_setup.conf`, `swtpm-localca.conf`; cli.md §11.4): a key starts at column 0,
//! `#` starts a comment (also after a value), trailing whitespace is dropped and
//! `${NAME}` is replaced from the environment. Pure: the environment is a function.

/// The entries of one configuration file, in file order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConfFile {
    entries: Vec<(String, String)>,
}

impl ConfFile {
    /// Parses `text`; lines that are not `key = value` are ignored, like swtpm does.
    pub fn parse(text: &str, env: impl Fn(&str) -> Option<String>) -> ConfFile {
        let entries = text
            .lines()
            .filter_map(|line| {
                let (key, value) = line.split_once('=')?;
                let key = key.trim_end();
                if key.is_empty() || key.starts_with(char::is_whitespace) || key.starts_with('#') {
                    return None;
                }
                let value = value.split('#').next().unwrap_or("").trim();
                Some((key.to_string(), expand(value, &env)))
            })
            .collect();
        ConfFile { entries }
    }

    /// The value of the first line with this key.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.entries
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// Replaces every `${NAME}` with the variable's value (empty when unset); an
/// unterminated `${` is kept as it is.
pub fn expand(value: &str, env: impl Fn(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(start) = rest.find("${") {
        let Some(len) = rest[start + 2..].find('}') else {
            break;
        };
        out.push_str(&rest[..start]);
        out.push_str(&env(&rest[start + 2..start + 2 + len]).unwrap_or_default());
        rest = &rest[start + 2 + len + 1..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        (name == "HOME").then(|| "/home/u".to_string())
    }

    #[test]
    fn parses_keys_values_comments_and_variables() {
        let conf = ConfFile::parse(
            "# comment\ncreate_certs_tool= /usr/bin/swtpm_localca\nstatedir = ${HOME}/ca # here\n  indented = no\nempty =\nnovalue\nx = ${UNSET}y${\n",
            env,
        );
        assert_eq!(
            conf.get("create_certs_tool"),
            Some("/usr/bin/swtpm_localca")
        );
        assert_eq!(conf.get("statedir"), Some("/home/u/ca"));
        assert_eq!(conf.get("indented"), None);
        assert_eq!(conf.get("empty"), Some(""));
        assert_eq!(conf.get("novalue"), None);
        assert_eq!(conf.get("x"), Some("y${"));
    }

    #[test]
    fn first_entry_wins() {
        let conf = ConfFile::parse("a = 1\na = 2\n", env);
        assert_eq!(conf.get("a"), Some("1"));
    }

    #[test]
    fn never_panics_on_odd_text() {
        for text in [
            "=",
            "==",
            "${",
            "a=${",
            "a=${}",
            "a=#",
            "\u{feff}a=b",
            "a = ${${x}}",
        ] {
            let _ = ConfFile::parse(text, env);
        }
    }
}
