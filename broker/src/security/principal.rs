//! Who a connection is: Kafka's `KafkaPrincipal` (`User:NAME`), and `ssl.principal.mapping.rules`
//! turning a client certificate's subject into a name, with Kafka's semantics
//! (`SslPrincipalMapper`): rules are tried in order, the first whose pattern matches the whole
//! subject gives the name, `DEFAULT` gives the subject itself.

use regex::Regex;

/// An authenticated (or anonymous) client.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Principal {
    /// Kafka's principal type; always `User` here.
    pub kind: &'static str,
    pub name: String,
}

impl Principal {
    /// A user.
    pub fn user(name: impl Into<String>) -> Self {
        Self {
            kind: "User",
            name: name.into(),
        }
    }

    /// Who a client is before (or without) authentication.
    pub fn anonymous() -> Self {
        Self::user("ANONYMOUS")
    }
}

impl std::fmt::Display for Principal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.kind, self.name)
    }
}

/// One rule of `ssl.principal.mapping.rules`.
#[derive(Clone, Debug)]
enum Rule {
    Default,
    Replace {
        pattern: Regex,
        replacement: String,
        case: Case,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Case {
    Keep,
    Lower,
    Upper,
}

/// The parsed `ssl.principal.mapping.rules`.
#[derive(Clone, Debug)]
pub struct PrincipalMapper {
    rules: Vec<Rule>,
}

/// A rule that cannot be parsed.
#[derive(Debug, thiserror::Error)]
#[error("invalid ssl.principal.mapping.rules `{rule}`: {reason}")]
pub struct MappingRuleError {
    rule: String,
    reason: String,
}

impl PrincipalMapper {
    /// Parses `RULE:PATTERN/REPLACEMENT/[LU],...,DEFAULT` (rules separated by commas that are
    /// not inside a rule's pattern or replacement).
    ///
    /// # Errors
    /// A rule that is neither `DEFAULT` nor a well-formed `RULE:`, or a bad regular expression.
    pub fn parse(value: &str) -> Result<Self, MappingRuleError> {
        let mut rules = Vec::new();
        let mut rest = value.trim();
        while !rest.is_empty() {
            rest = rest.trim_start_matches([',', ' ', '\n', '\t']);
            if rest.is_empty() {
                break;
            }
            if let Some(after) = rest.strip_prefix("DEFAULT") {
                rules.push(Rule::Default);
                rest = after;
                continue;
            }
            let body = rest.strip_prefix("RULE:").ok_or_else(|| MappingRuleError {
                rule: rest.to_string(),
                reason: "expected RULE:PATTERN/REPLACEMENT/[LU] or DEFAULT".into(),
            })?;
            let (pattern, after) = split_unescaped(body, '/').ok_or_else(|| MappingRuleError {
                rule: rest.to_string(),
                reason: "expected RULE:PATTERN/REPLACEMENT/".into(),
            })?;
            let (replacement, after) =
                split_unescaped(after, '/').ok_or_else(|| MappingRuleError {
                    rule: rest.to_string(),
                    reason: "expected RULE:PATTERN/REPLACEMENT/".into(),
                })?;
            let (case, after) = match after.chars().next() {
                Some('L') => (Case::Lower, &after[1..]),
                Some('U') => (Case::Upper, &after[1..]),
                _ => (Case::Keep, after),
            };
            let pattern =
                Regex::new(&format!("^(?:{pattern})$")).map_err(|e| MappingRuleError {
                    rule: rest.to_string(),
                    reason: e.to_string(),
                })?;
            rules.push(Rule::Replace {
                pattern,
                replacement: java_to_rust_replacement(replacement),
                case,
            });
            rest = after;
        }
        Ok(Self { rules })
    }

    /// The principal name of a certificate subject; `None` when no rule applies (Kafka then
    /// refuses the connection).
    pub fn name_of(&self, subject: &str) -> Option<String> {
        for rule in &self.rules {
            match rule {
                Rule::Default => return Some(subject.to_string()),
                Rule::Replace {
                    pattern,
                    replacement,
                    case,
                } => {
                    if pattern.is_match(subject) {
                        let name = pattern.replace(subject, replacement.as_str()).into_owned();
                        return Some(match case {
                            Case::Keep => name,
                            Case::Lower => name.to_lowercase(),
                            Case::Upper => name.to_uppercase(),
                        });
                    }
                }
            }
        }
        None
    }
}

/// Splits at the first `sep` not escaped by a backslash.
fn split_unescaped(text: &str, sep: char) -> Option<(&str, &str)> {
    let mut escaped = false;
    for (i, c) in text.char_indices() {
        match c {
            '\\' if !escaped => escaped = true,
            c if c == sep && !escaped => return Some((&text[..i], &text[i + 1..])),
            _ => escaped = false,
        }
    }
    None
}

/// Java's `$1` group references become the regex crate's `${1}`.
fn java_to_rust_replacement(replacement: &str) -> String {
    let mut out = String::with_capacity(replacement.len());
    let mut chars = replacement.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '$' {
            let mut digits = String::new();
            while let Some(d) = chars.peek().filter(|d| d.is_ascii_digit()) {
                digits.push(*d);
                chars.next();
            }
            if digits.is_empty() {
                out.push_str("$$");
            } else {
                out.push_str(&format!("${{{digits}}}"));
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// A certificate subject as Java's `X500Principal.getName()` writes it (RFC 2253): the
/// relative names from last to first, comma-separated, values escaped.
pub fn rfc2253_subject(attributes: &[(String, String)]) -> String {
    attributes
        .iter()
        .rev()
        .map(|(key, value)| format!("{key}={}", escape_rfc2253(value)))
        .collect::<Vec<_>>()
        .join(",")
}

fn escape_rfc2253(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for (i, c) in value.chars().enumerate() {
        let special = matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';')
            || (i == 0 && (c == '#' || c == ' '))
            || (i + 1 == value.chars().count() && c == ' ');
        if special {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const SUBJECT: &str = "CN=alice,OU=Streaming,O=Acme,L=Paris,C=FR";

    #[test]
    fn default_is_the_whole_subject() {
        let mapper = PrincipalMapper::parse("DEFAULT").expect("parse");
        assert_eq!(mapper.name_of(SUBJECT).as_deref(), Some(SUBJECT));
    }

    #[test]
    fn the_first_matching_rule_names_the_principal() {
        // Kafka's documented example rules.
        let mapper = PrincipalMapper::parse(
            "RULE:^CN=(.*?),OU=ServiceUsers.*$/$1/,RULE:^CN=(.*?),OU=(.*?),O=(.*?),L=(.*?),ST=(.*?),C=(.*?)$/$1@$2/L,RULE:^.*[Cc][Nn]=([a-zA-Z0-9.]*).*$/$1/U,DEFAULT",
        )
        .expect("parse");
        assert_eq!(
            mapper
                .name_of("CN=kafka-server1,OU=ServiceUsers,O=Org")
                .as_deref(),
            Some("kafka-server1")
        );
        assert_eq!(
            mapper
                .name_of("CN=Duke,OU=JavaSoft,O=Sun Microsystems,L=Palo,ST=CA,C=US")
                .as_deref(),
            Some("duke@javasoft")
        );
        assert_eq!(mapper.name_of(SUBJECT).as_deref(), Some("ALICE"));
    }

    #[test]
    fn without_default_an_unmatched_subject_has_no_principal() {
        let mapper = PrincipalMapper::parse("RULE:^CN=(.*)-svc$/$1/").expect("parse");
        assert_eq!(mapper.name_of("CN=orders-svc").as_deref(), Some("orders"));
        assert_eq!(mapper.name_of(SUBJECT), None);
    }

    #[test]
    fn malformed_rules_are_refused() {
        for bad in ["RULE:abc", "RULE:(/x/", "NOPE", "RULE:a/b"] {
            assert!(PrincipalMapper::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn subjects_print_as_java_does() {
        let attributes = vec![
            ("C".to_string(), "FR".to_string()),
            ("O".to_string(), "Acme, Inc".to_string()),
            ("CN".to_string(), "alice".to_string()),
        ];
        assert_eq!(rfc2253_subject(&attributes), "CN=alice,O=Acme\\, Inc,C=FR");
    }
}
