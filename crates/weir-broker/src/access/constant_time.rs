//! A comparison whose time does not depend on where its inputs differ, for
//! digests and keys (password hashes, SCRAM's stored key), in a leaf module.

/// Compares without an early exit, so the time taken says nothing of where two
/// digests differ.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
