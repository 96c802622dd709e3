//! Durable file writes: a temp file in the same folder, fsync, atomic rename, fsync of the
//! folder. A crash leaves either the old file or the new one, never a torn one.

use std::fs::File;
use std::io::Write;
use std::path::Path;

/// Writes `bytes` to `path` durably, creating the parent folder if needed.
pub fn write(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(dir)?;
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    File::open(dir)?.sync_all()
}
