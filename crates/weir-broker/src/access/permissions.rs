//! What a user may do in a vhost: RabbitMQ's three regular expressions, `configure`
//! (declare and delete), `write` (publish to, bind a queue to) and `read` (consume
//! from, get, purge, bind from). As in RabbitMQ a pattern matches anywhere in the
//! name unless anchored (`^orders\.` for a prefix), and the empty pattern matches
//! nothing. Patterns are compiled once, when they are set, with a size limit, so a
//! check is one regex search.

use regex::{Regex, RegexBuilder};
use serde::{Deserialize, Serialize};

/// Longest pattern accepted, bytes.
const MAX_PATTERN_BYTES: usize = 4096;
/// Largest compiled pattern, bytes (the regex crate's own default is 10 MiB).
const MAX_COMPILED_BYTES: usize = 1 << 20;

/// The three kinds of permission.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Operation {
    /// Declare and delete.
    Configure,
    /// Publish to (an exchange), bind to (a queue or exchange as destination).
    Write,
    /// Consume, get, purge (a queue), bind from (an exchange as source).
    Read,
}

impl Operation {
    /// Its name, as RabbitMQ writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Configure => "configure",
            Operation::Write => "write",
            Operation::Read => "read",
        }
    }
}

/// A user's patterns in one vhost, as given.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Patterns {
    /// Names the user may declare and delete.
    pub configure: String,
    /// Names the user may write to.
    pub write: String,
    /// Names the user may read from.
    pub read: String,
}

impl Patterns {
    /// Everything (`.*` for each), what `guest` has on `/`.
    pub fn all() -> Patterns {
        Patterns {
            configure: ".*".into(),
            write: ".*".into(),
            read: ".*".into(),
        }
    }
}

/// [`Patterns`] compiled.
#[derive(Clone, Debug)]
pub(crate) struct Compiled {
    patterns: Patterns,
    configure: Option<Regex>,
    write: Option<Regex>,
    read: Option<Regex>,
}

impl Compiled {
    /// Compiles all three, or says which one is wrong and why.
    pub(crate) fn new(patterns: Patterns) -> Result<Compiled, (Operation, String)> {
        let compile =
            |op: Operation, pattern: &str| -> Result<Option<Regex>, (Operation, String)> {
                if pattern.is_empty() {
                    return Ok(None);
                }
                if pattern.len() > MAX_PATTERN_BYTES {
                    return Err((op, format!("longer than {MAX_PATTERN_BYTES} bytes")));
                }
                RegexBuilder::new(pattern)
                    .size_limit(MAX_COMPILED_BYTES)
                    .build()
                    .map(Some)
                    .map_err(|e| (op, e.to_string()))
            };
        Ok(Compiled {
            configure: compile(Operation::Configure, &patterns.configure)?,
            write: compile(Operation::Write, &patterns.write)?,
            read: compile(Operation::Read, &patterns.read)?,
            patterns,
        })
    }

    pub(crate) fn patterns(&self) -> &Patterns {
        &self.patterns
    }

    /// Whether `op` is allowed on the resource named `name`.
    pub(crate) fn allows(&self, op: Operation, name: &str) -> bool {
        let regex = match op {
            Operation::Configure => &self.configure,
            Operation::Write => &self.write,
            Operation::Read => &self.read,
        };
        regex.as_ref().is_some_and(|r| r.is_match(name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compiled(configure: &str, write: &str, read: &str) -> Compiled {
        Compiled::new(Patterns {
            configure: configure.into(),
            write: write.into(),
            read: read.into(),
        })
        .unwrap()
    }

    #[test]
    fn patterns_match_anywhere_unless_anchored_and_empty_matches_nothing() {
        let p = compiled("^orders\\.", "logs", "");
        assert!(p.allows(Operation::Configure, "orders.eu"));
        assert!(!p.allows(Operation::Configure, "x.orders.eu"));
        // Unanchored, as RabbitMQ's re:run: "logs" is found inside the name.
        assert!(p.allows(Operation::Write, "app-logs-1"));
        assert!(!p.allows(Operation::Write, "metrics"));
        // The empty pattern allows nothing, not even the empty name.
        assert!(!p.allows(Operation::Read, ""));
        assert!(!p.allows(Operation::Read, "anything"));
        let all = Compiled::new(Patterns::all()).unwrap();
        for op in [Operation::Configure, Operation::Write, Operation::Read] {
            assert!(all.allows(op, "amq.default"));
            assert!(all.allows(op, ""));
        }
    }

    #[test]
    fn a_bad_pattern_is_named_with_its_reason() {
        let err = Compiled::new(Patterns {
            configure: ".*".into(),
            write: "(".into(),
            read: ".*".into(),
        })
        .unwrap_err();
        assert_eq!(err.0, Operation::Write);
        assert!(!err.1.is_empty());
        let long = "a".repeat(MAX_PATTERN_BYTES + 1);
        let err = Compiled::new(Patterns {
            configure: String::new(),
            write: String::new(),
            read: long,
        })
        .unwrap_err();
        assert_eq!(err.0, Operation::Read);
        // A pattern that compiles too large is refused, not built.
        let huge = Compiled::new(Patterns {
            configure: "\\w{1000}\\w{1000}\\w{1000}".into(),
            write: String::new(),
            read: String::new(),
        });
        assert!(huge.is_err());
    }
}
