//! The 32-byte header at the start of every segment (`.log`) and index (`.idx`) file.
//!
//! ```text
//!  0  [u8; 8]  magic           "WEIRLOG\0" (segment) or "WEIRIDX\0" (index)
//!  8  u16      format_version  2 (1 is read too)
//! 10  u16      reserved        0
//! 12  u64      base_offset     offset of the segment's first record (= the file name)
//! 20  i64      created_ms      wall-clock time the segment was created (segment age)
//! 28  u32      crc             CRC32C of bytes 0..28
//! ```
//!
//! The version is per file, so a later format can coexist with old segments until they
//! age out. A reader refuses a version it does not know instead of guessing.
//!
//! Versions: 1, batches in weir's format only; 2, a segment may also hold Kafka's
//! record batches (`kafka_batch.rs`). Files are written as 2, so a build that knows
//! only version 1 refuses a log that may hold Kafka batches instead of taking one
//! for damage and cutting it off.

use std::path::Path;

use crate::error::{Corruption, LogError, Result};

/// Size of the header.
pub(crate) const FILE_HEADER_LEN: usize = 32;
/// The format version this build writes; it reads every version from 1 to this.
pub(crate) const FORMAT_VERSION: u16 = 2;

/// Which kind of file a header belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FileKind {
    Segment,
    Index,
}

impl FileKind {
    fn magic(self) -> &'static [u8; 8] {
        match self {
            FileKind::Segment => b"WEIRLOG\0",
            FileKind::Index => b"WEIRIDX\0",
        }
    }
}

/// The decoded header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct FileHeader {
    pub(crate) kind: FileKind,
    pub(crate) base_offset: u64,
    pub(crate) created_ms: i64,
}

impl FileHeader {
    pub(crate) fn encode(&self) -> [u8; FILE_HEADER_LEN] {
        let mut out = [0u8; FILE_HEADER_LEN];
        out[0..8].copy_from_slice(self.kind.magic());
        out[8..10].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        out[12..20].copy_from_slice(&self.base_offset.to_le_bytes());
        out[20..28].copy_from_slice(&self.created_ms.to_le_bytes());
        let crc = crc32c::crc32c(&out[0..28]);
        out[28..32].copy_from_slice(&crc.to_le_bytes());
        out
    }

    /// Decodes and checks a header: magic, checksum, version, and that its base offset
    /// is the one in the file name.
    pub(crate) fn decode(
        bytes: &[u8; FILE_HEADER_LEN],
        kind: FileKind,
        expected_base: u64,
        path: &Path,
    ) -> Result<FileHeader> {
        if &bytes[0..8] != kind.magic() {
            return Err(LogError::corrupt(path, 0, Corruption::BadMagic));
        }
        let crc = u32::from_le_bytes(bytes[28..32].try_into().expect("invariant: 4 bytes"));
        if crc != crc32c::crc32c(&bytes[0..28]) {
            return Err(LogError::corrupt(path, 0, Corruption::HeaderChecksum));
        }
        let version = u16::from_le_bytes(bytes[8..10].try_into().expect("invariant: 2 bytes"));
        if !(1..=FORMAT_VERSION).contains(&version) {
            return Err(LogError::UnsupportedVersion {
                path: path.to_owned(),
                found: version,
                supported: FORMAT_VERSION,
            });
        }
        let base_offset = u64::from_le_bytes(bytes[12..20].try_into().expect("invariant: 8 bytes"));
        if base_offset != expected_base {
            return Err(LogError::corrupt(
                path,
                12,
                Corruption::HeaderBaseOffset {
                    expected: expected_base,
                    found: base_offset,
                },
            ));
        }
        Ok(FileHeader {
            kind,
            base_offset,
            created_ms: i64::from_le_bytes(bytes[20..28].try_into().expect("invariant: 8 bytes")),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_rejections() {
        let path = Path::new("x.log");
        let header = FileHeader {
            kind: FileKind::Segment,
            base_offset: 77,
            created_ms: 1_700_000_000_000,
        };
        let bytes = header.encode();
        assert_eq!(
            FileHeader::decode(&bytes, FileKind::Segment, 77, path).unwrap(),
            header
        );
        // Wrong kind, wrong base, a flipped bit, a future version.
        assert!(matches!(
            FileHeader::decode(&bytes, FileKind::Index, 77, path),
            Err(LogError::Corrupt {
                reason: Corruption::BadMagic,
                ..
            })
        ));
        assert!(matches!(
            FileHeader::decode(&bytes, FileKind::Segment, 78, path),
            Err(LogError::Corrupt {
                reason: Corruption::HeaderBaseOffset { .. },
                ..
            })
        ));
        let mut flipped = bytes;
        flipped[21] ^= 4;
        assert!(matches!(
            FileHeader::decode(&flipped, FileKind::Segment, 77, path),
            Err(LogError::Corrupt {
                reason: Corruption::HeaderChecksum,
                ..
            })
        ));
        let with_version = |v: u16| {
            let mut b = bytes;
            b[8..10].copy_from_slice(&v.to_le_bytes());
            let crc = crc32c::crc32c(&b[0..28]);
            b[28..32].copy_from_slice(&crc.to_le_bytes());
            FileHeader::decode(&b, FileKind::Segment, 77, path)
        };
        assert!(with_version(1).is_ok(), "version 1 files are read");
        assert!(matches!(
            with_version(3),
            Err(LogError::UnsupportedVersion {
                found: 3,
                supported: 2,
                ..
            })
        ));
    }
}
