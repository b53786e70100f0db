//! Topic patterns: a trie over dot-separated words, so matching a routing key costs
//! time in the key's words and the patterns that share its prefixes, not in the
//! number of bindings.
//!
//! A routing key and a pattern are split on `.` into words; an empty string is one
//! empty word, and empty words are words like any other (`a..b` has three). In a
//! pattern, `*` matches exactly one word and `#` matches zero or more words.

use std::collections::{BTreeSet, HashMap, HashSet};

use crate::error::{BrokerError, Result};

/// Longest routing key or pattern, bytes (AMQP's short string).
pub const MAX_KEY_BYTES: usize = 255;

/// Checks a topic pattern: at most 255 bytes. Every word is allowed; `*` and `#`
/// are special only as whole words (`a*` is a literal word).
pub fn validate_pattern(pattern: &str) -> Result<()> {
    if pattern.len() > MAX_KEY_BYTES {
        return Err(BrokerError::invalid(
            "routing_key",
            format!(
                "{} bytes is over the limit of {MAX_KEY_BYTES}",
                pattern.len()
            ),
        ));
    }
    Ok(())
}

#[derive(Clone, Debug)]
struct Node<T> {
    words: HashMap<String, Node<T>>,
    star: Option<Box<Node<T>>>,
    hash: Option<Box<Node<T>>>,
    values: BTreeSet<T>,
}

impl<T> Default for Node<T> {
    fn default() -> Self {
        Node {
            words: HashMap::new(),
            star: None,
            hash: None,
            values: BTreeSet::new(),
        }
    }
}

impl<T: Ord> Node<T> {
    fn is_empty(&self) -> bool {
        self.values.is_empty()
            && self.words.is_empty()
            && self.star.is_none()
            && self.hash.is_none()
    }
}

/// A set of (pattern, value) pairs that answers which values match a key.
#[derive(Clone, Debug)]
pub struct TopicTrie<T> {
    root: Node<T>,
    len: usize,
}

impl<T> Default for TopicTrie<T> {
    fn default() -> Self {
        TopicTrie {
            root: Node::default(),
            len: 0,
        }
    }
}

impl<T: Ord + Clone> TopicTrie<T> {
    /// Adds `value` under `pattern`; false if it was there already.
    pub fn insert(&mut self, pattern: &str, value: T) -> bool {
        let mut node = &mut self.root;
        for word in pattern.split('.') {
            node = match word {
                "*" => node.star.get_or_insert_with(Box::default),
                "#" => node.hash.get_or_insert_with(Box::default),
                w => node.words.entry(w.to_owned()).or_default(),
            };
        }
        let added = node.values.insert(value);
        self.len += usize::from(added);
        added
    }

    /// Removes `value` from `pattern`; false if it was not there.
    pub fn remove(&mut self, pattern: &str, value: &T) -> bool {
        fn go<T: Ord>(node: &mut Node<T>, words: &[&str], value: &T) -> bool {
            let Some((first, rest)) = words.split_first() else {
                return node.values.remove(value);
            };
            let removed = match *first {
                "*" => node.star.as_deref_mut().is_some_and(|n| go(n, rest, value)),
                "#" => node.hash.as_deref_mut().is_some_and(|n| go(n, rest, value)),
                w => node.words.get_mut(w).is_some_and(|n| go(n, rest, value)),
            };
            if removed {
                // Prune the branch it emptied.
                match *first {
                    "*" if node.star.as_deref().is_some_and(Node::is_empty) => node.star = None,
                    "#" if node.hash.as_deref().is_some_and(Node::is_empty) => node.hash = None,
                    w if node.words.get(w).is_some_and(Node::is_empty) => {
                        node.words.remove(w);
                    }
                    _ => {}
                }
            }
            removed
        }
        let words: Vec<&str> = pattern.split('.').collect();
        let removed = go(&mut self.root, &words, value);
        self.len -= usize::from(removed);
        removed
    }

    /// How many (pattern, value) pairs it holds.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether it holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Every value whose pattern matches `key`, each once, in order (borrowed:
    /// routing a message clones nothing here).
    pub fn matches(&self, key: &str) -> BTreeSet<&T> {
        let words: Vec<&str> = key.split('.').collect();
        let mut out = BTreeSet::new();
        // (node, position) pairs already explored: `#` can reach the same state by
        // many paths, and exploring it twice would only repeat work.
        let mut seen: HashSet<(*const Node<T>, usize)> = HashSet::new();
        let mut stack: Vec<(&Node<T>, usize)> = vec![(&self.root, 0)];
        while let Some((node, pos)) = stack.pop() {
            if !seen.insert((std::ptr::from_ref(node), pos)) {
                continue;
            }
            if pos == words.len() {
                out.extend(node.values.iter());
            }
            if let Some(hash) = node.hash.as_deref() {
                // `#` eats zero or more words.
                for next in pos..=words.len() {
                    stack.push((hash, next));
                }
            }
            if let Some(word) = words.get(pos) {
                if let Some(child) = node.words.get(*word) {
                    stack.push((child, pos + 1));
                }
                if let Some(star) = node.star.as_deref() {
                    stack.push((star, pos + 1));
                }
            }
        }
        out
    }
}

/// Whether `pattern` matches `key`, for one binding (and the tests' reference).
///
/// Exponential in the number of `#` words (it tries every split), so it is not
/// for hostile input: routing uses [`TopicTrie`], which is not. Only tests call it.
pub fn pattern_matches(pattern: &str, key: &str) -> bool {
    fn go(p: &[&str], k: &[&str]) -> bool {
        match p.split_first() {
            None => k.is_empty(),
            Some((&"#", rest)) => (0..=k.len()).any(|i| go(rest, &k[i..])),
            Some((&"*", rest)) => !k.is_empty() && go(rest, &k[1..]),
            Some((w, rest)) => k.first() == Some(w) && go(rest, &k[1..]),
        }
    }
    let p: Vec<&str> = pattern.split('.').collect();
    let k: Vec<&str> = key.split('.').collect();
    go(&p, &k)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// (pattern, key, matches)
    const CASES: &[(&str, &str, bool)] = &[
        ("a.b.c", "a.b.c", true),
        ("a.b.c", "a.b", false),
        ("a.*.c", "a.b.c", true),
        ("a.*.c", "a.c", false),
        ("a.*.c", "a..c", true),
        ("*", "", true),
        ("*", "a", true),
        ("*", "a.b", false),
        ("#", "", true),
        ("#", "a.b.c", true),
        ("a.#", "a", true),
        ("a.#", "a.b.c", true),
        ("a.#", "b", false),
        ("#.a", "a", true),
        ("#.a", "x.y.a", true),
        ("a.#.b", "a.b", true),
        ("a.#.b", "a.x.y.b", true),
        ("a.#.b", "a.x.y.c", false),
        ("#.#", "", true),
        ("#.#", "a.b", true),
        ("#.*", "", true),
        ("#.*", "a.b", true),
        ("*.#", "a", true),
        ("a.*.#", "a", false),
        ("a.*.#", "a.b", true),
        ("", "", true),
        ("", "a", false),
        ("a..b", "a..b", true),
        ("a..b", "a.b", false),
        ("a*", "ab", false),
        ("a*", "a*", true),
        ("user.created", "user.created", true),
        ("user.*", "user.created", true),
        ("*.created", "order.created", true),
    ];

    #[test]
    fn the_table_holds_for_the_trie_and_the_reference() {
        for &(pattern, key, want) in CASES {
            assert_eq!(
                pattern_matches(pattern, key),
                want,
                "reference: {pattern:?} ~ {key:?}"
            );
            let mut trie = TopicTrie::default();
            trie.insert(pattern, 1);
            assert_eq!(
                trie.matches(key).contains(&&1),
                want,
                "trie: {pattern:?} ~ {key:?}"
            );
        }
    }

    #[test]
    fn keys_of_255_bytes_and_many_bindings() {
        let key = ["ab"; 85].join(".");
        assert_eq!(key.len(), 254);
        let mut trie = TopicTrie::default();
        for i in 0..10_000 {
            trie.insert(&format!("ab.{i}.#"), i);
        }
        trie.insert("#", 99_999);
        trie.insert(&key, 100_000);
        trie.insert("#.ab.#.ab.#", 100_001);
        let got: Vec<i32> = trie.matches(&key).into_iter().copied().collect();
        assert_eq!(
            got.into_iter().collect::<Vec<_>>(),
            [99_999, 100_000, 100_001]
        );
        assert!(validate_pattern(&format!("{key}.x")).is_err());
        assert_eq!(trie.len(), 10_003);
        assert!(trie.remove(&key, &100_000));
        assert!(!trie.remove(&key, &100_000));
        assert_eq!(trie.len(), 10_002);
    }

    #[test]
    fn removing_prunes_and_keeps_siblings() {
        let mut trie = TopicTrie::default();
        trie.insert("a.*", 1);
        trie.insert("a.b", 2);
        trie.insert("a.#", 3);
        assert!(trie.remove("a.*", &1));
        assert_eq!(
            trie.matches("a.b").into_iter().copied().collect::<Vec<_>>(),
            [2, 3]
        );
        assert!(trie.remove("a.#", &3));
        assert!(trie.remove("a.b", &2));
        assert!(trie.root.is_empty());
        assert!(trie.is_empty());
    }

    fn word() -> impl Strategy<Value = String> {
        prop_oneof![
            Just(String::new()),
            Just("*".to_owned()),
            Just("#".to_owned()),
            "[ab]{1,2}",
        ]
    }

    fn key_word() -> impl Strategy<Value = String> {
        prop_oneof![Just(String::new()), "[ab]{1,2}"]
    }

    /// The naive regex reading of a pattern: every word of the key is `\.word`, a
    /// `*` is one such chunk, a `#` any number of them.
    fn regex_of(pattern: &str) -> regex::Regex {
        let mut re = String::from("^");
        for w in pattern.split('.') {
            match w {
                "*" => re.push_str(r"\.[^.]*"),
                "#" => re.push_str(r"(?:\.[^.]*)*"),
                w => {
                    re.push_str(r"\.");
                    re.push_str(&regex::escape(w));
                }
            }
        }
        re.push('$');
        regex::Regex::new(&re).expect("a valid regex")
    }

    #[test]
    fn the_regex_reference_agrees_with_the_table() {
        for &(pattern, key, want) in CASES {
            assert_eq!(
                regex_of(pattern).is_match(&format!(".{key}")),
                want,
                "{pattern:?} ~ {key:?}"
            );
        }
    }

    proptest! {
        #[test]
        fn the_trie_agrees_with_a_naive_regex_matcher(
            patterns in proptest::collection::vec(proptest::collection::vec(word(), 1..5), 1..8),
            key in proptest::collection::vec(key_word(), 1..6),
        ) {
            let key = key.join(".");
            let mut trie = TopicTrie::default();
            let patterns: Vec<String> = patterns.into_iter().map(|p| p.join(".")).collect();
            for (i, p) in patterns.iter().enumerate() {
                trie.insert(p, i);
            }
            let want: BTreeSet<usize> = patterns
                .iter()
                .enumerate()
                .filter(|(_, p)| regex_of(p).is_match(&format!(".{key}")))
                .map(|(i, _)| i)
                .collect();
            for (i, p) in patterns.iter().enumerate() {
                prop_assert_eq!(pattern_matches(p, &key), want.contains(&i), "{} ~ {}", p, key);
            }
            prop_assert_eq!(trie.matches(&key).into_iter().copied().collect::<BTreeSet<_>>(), want);
        }
    }
}
