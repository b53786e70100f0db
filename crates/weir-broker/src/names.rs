//! Broker-wide names: a queue or exchange of vhost `/` is called by its own name,
//! one of vhost `v` by `NUL v NUL name` (decision 0009, [`crate::vhost`]). A leaf:
//! the name checks (`api`, `routing`) and the vhost view both use it.

use crate::access::DEFAULT_VHOST;

/// What separates a vhost from a name in a broker-wide name.
pub(crate) const SEPARATOR: char = '\0';

/// The vhost and the client's name of a broker-wide name.
pub fn split(full: &str) -> (&str, &str) {
    if let Some(rest) = full.strip_prefix(SEPARATOR)
        && let Some((vhost, name)) = rest.split_once(SEPARATOR)
    {
        return (vhost, name);
    }
    (DEFAULT_VHOST, full)
}

/// The broker-wide name of `name` in `vhost`.
pub fn join(vhost: &str, name: &str) -> String {
    if vhost == DEFAULT_VHOST {
        name.to_owned()
    } else {
        format!("{SEPARATOR}{vhost}{SEPARATOR}{name}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_split_back_into_their_vhost_and_name() {
        assert_eq!(split("orders"), ("/", "orders"));
        assert_eq!(join("/", "orders"), "orders");
        let full = join("staging", "orders");
        assert_eq!(full, "\0staging\0orders");
        assert_eq!(split(&full), ("staging", "orders"));
        assert_eq!(split(&join("staging", "")), ("staging", ""));
        // A lone leading NUL is not a vhost: it stays a (refused) name of `/`.
        assert_eq!(split("\0x"), ("/", "\0x"));
    }
}
