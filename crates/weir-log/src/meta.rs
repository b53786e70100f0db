//! `log.meta`: what the log must remember that the segments cannot tell.
//!
//! Today that is only the *start offset* set by `trim_before`, which can fall inside a
//! segment (segments are removed whole, so the first segment may begin earlier). The
//! log's first offset is the larger of this and the first segment's base.
//!
//! ```text
//!  0  [u8; 8]  magic          "WEIRMETA"
//!  8  u16      format_version 1
//! 10  u16      reserved       0
//! 12  u64      start_offset
//! 20  u32      crc            CRC32C of bytes 0..20
//! ```
//!
//! It is replaced atomically: write `log.meta.tmp`, sync it, rename over `log.meta`,
//! sync the directory. A crash leaves either the old or the new file, never a mix.

use std::path::Path;

use crate::error::{Corruption, LogError, Result};
use crate::io::{Fs, read_exact_at};

/// The version of `log.meta` this build writes and reads (unchanged since 1).
const FORMAT_VERSION: u16 = 1;

pub(crate) const META_FILE: &str = "log.meta";
const META_TMP: &str = "log.meta.tmp";
const META_LEN: usize = 24;
const MAGIC: &[u8; 8] = b"WEIRMETA";

fn encode(start_offset: u64) -> [u8; META_LEN] {
    let mut out = [0u8; META_LEN];
    out[0..8].copy_from_slice(MAGIC);
    out[8..10].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    out[12..20].copy_from_slice(&start_offset.to_le_bytes());
    let crc = crc32c::crc32c(&out[0..20]);
    out[20..24].copy_from_slice(&crc.to_le_bytes());
    out
}

fn decode(bytes: &[u8; META_LEN], path: &Path) -> Result<u64> {
    if &bytes[0..8] != MAGIC {
        return Err(LogError::corrupt(path, 0, Corruption::BadMagic));
    }
    let crc = u32::from_le_bytes(bytes[20..24].try_into().expect("invariant: 4 bytes"));
    if crc != crc32c::crc32c(&bytes[0..20]) {
        return Err(LogError::corrupt(path, 0, Corruption::HeaderChecksum));
    }
    let version = u16::from_le_bytes(bytes[8..10].try_into().expect("invariant: 2 bytes"));
    if version != FORMAT_VERSION {
        return Err(LogError::UnsupportedVersion {
            path: path.to_owned(),
            found: version,
            supported: FORMAT_VERSION,
        });
    }
    Ok(u64::from_le_bytes(
        bytes[12..20].try_into().expect("invariant: 8 bytes"),
    ))
}

/// The stored start offset, or `None` if the log never trimmed.
pub(crate) fn read(fs: &dyn Fs, dir: &Path) -> Result<Option<u64>> {
    let path = dir.join(META_FILE);
    let file = match fs.open(&path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(LogError::io("open", &path, e)),
    };
    let mut bytes = [0u8; META_LEN];
    read_exact_at(&*file, 0, &mut bytes).map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            LogError::corrupt(&path, 0, Corruption::Truncated)
        } else {
            LogError::io("read", &path, e)
        }
    })?;
    decode(&bytes, &path).map(Some)
}

/// Durably records `start_offset`.
pub(crate) fn write(fs: &dyn Fs, dir: &Path, start_offset: u64) -> Result<()> {
    let tmp = dir.join(META_TMP);
    let written = fs
        .create(&tmp)
        .and_then(|file| {
            file.write_all_at(0, &[&encode(start_offset)])?;
            file.sync_data()
        })
        .and_then(|()| fs.rename(&tmp, &dir.join(META_FILE)));
    if let Err(e) = written {
        // A full disk must not leave the temporary behind while the log runs
        // (recovery would remove it at the next open anyway).
        let _ = fs.remove(&tmp);
        return Err(LogError::io("write", &tmp, e));
    }
    fs.sync_dir(dir).map_err(|e| LogError::io("sync", dir, e))
}

/// Whether `name` is a leftover temporary of an interrupted rewrite.
pub(crate) fn is_temporary(name: &str) -> bool {
    Path::new(name)
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("tmp"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::StdFs;

    #[test]
    fn round_trip_and_damage() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read(&StdFs::default(), dir.path()).unwrap(), None);
        write(&StdFs::default(), dir.path(), 1234).unwrap();
        assert_eq!(read(&StdFs::default(), dir.path()).unwrap(), Some(1234));
        write(&StdFs::default(), dir.path(), 99_999).unwrap();
        assert_eq!(read(&StdFs::default(), dir.path()).unwrap(), Some(99_999));

        let mut bytes = encode(5);
        bytes[13] ^= 1;
        assert!(matches!(
            decode(&bytes, Path::new("m")),
            Err(LogError::Corrupt {
                reason: Corruption::HeaderChecksum,
                ..
            })
        ));
    }
}
