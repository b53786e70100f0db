//! Small files written durably (queue options, numbers, the routing table) and the
//! error they fail with. A leaf: the broker's modules that write such files use it.

use std::fs::File;
use std::io::Write;
use std::path::Path;

use crate::error::BrokerError;

#[allow(clippy::needless_pass_by_value)] // used as map_err(|e| io_error(.., e))
pub(crate) fn io_error(what: &str, path: &Path, e: std::io::Error) -> BrokerError {
    BrokerError::internal(format!("{what} {}: {e}", path.display()))
}

pub(crate) fn write_durably(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("json.tmp");
    let mut f = File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(parent) = path.parent() {
        File::open(parent)?.sync_all()?;
    }
    Ok(())
}
