//! Durable file writes: a temp file in the same folder, fsync, atomic rename, fsync of the
//! folder. A crash leaves either the old file or the new one, never a torn one.
//!
//! Folders (checkpoints, exports) are written whole into a staging folder beside their target
//! and swapped into place with [`replace_dir`]; the previous folder stays valid until the new one
//! is complete.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

fn parent_of(path: &Path) -> &Path {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    }
}

/// Writes `bytes` to `path` durably, creating the parent folder if needed.
pub fn write(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = parent_of(path);
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

fn dir_name(out: &Path) -> String {
    out.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "out".into())
}

/// A fresh, empty staging folder beside `out` (same filesystem, so the final rename is atomic).
/// Staging and old folders that killed writers left beside `out` are removed first.
pub fn staging_dir(out: &Path) -> std::io::Result<PathBuf> {
    let parent = parent_of(out);
    std::fs::create_dir_all(parent)?;
    let name = dir_name(out);
    for prefix in [format!(".{name}.staging-"), format!(".{name}.old-")] {
        for e in std::fs::read_dir(parent)? {
            let e = e?;
            if e.file_name().to_string_lossy().starts_with(&prefix) {
                std::fs::remove_dir_all(e.path())?;
            }
        }
    }
    let stage = parent.join(format!(".{name}.staging-{}", std::process::id()));
    std::fs::create_dir_all(&stage)?;
    Ok(stage)
}

/// fsyncs every file of `stage` and `stage` itself.
fn sync_tree(stage: &Path) -> std::io::Result<()> {
    for e in std::fs::read_dir(stage)? {
        let p = e?.path();
        if p.is_file() {
            File::open(&p)?.sync_all()?;
        }
    }
    File::open(stage)?.sync_all()
}

/// Atomically exchanges two paths (Linux `renameat2(RENAME_EXCHANGE)`); `Ok(false)` where the
/// filesystem or OS cannot.
#[cfg(target_os = "linux")]
fn exchange(a: &Path, b: &Path) -> std::io::Result<bool> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let ca = CString::new(a.as_os_str().as_bytes()).map_err(std::io::Error::other)?;
    let cb = CString::new(b.as_os_str().as_bytes()).map_err(std::io::Error::other)?;
    // SAFETY: both pointers are valid NUL-terminated strings for the duration of the call.
    let r = unsafe { libc::renameat2(libc::AT_FDCWD, ca.as_ptr(), libc::AT_FDCWD, cb.as_ptr(), libc::RENAME_EXCHANGE) };
    if r == 0 {
        return Ok(true);
    }
    let e = std::io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::ENOSYS) | Some(libc::EINVAL) | Some(libc::ENOTSUP) => Ok(false),
        _ => Err(e),
    }
}

#[cfg(not(target_os = "linux"))]
fn exchange(_: &Path, _: &Path) -> std::io::Result<bool> {
    Ok(false)
}

/// Puts the complete folder `stage` in place of `out`. Files are fsynced first; where the OS
/// allows it the swap is one atomic exchange, so at every instant `out` is either the old
/// folder or the new one. (Elsewhere: two renames, and a crash between them leaves the old
/// folder as `.NAME.old-PID` beside `out`.)
pub fn replace_dir(stage: &Path, out: &Path) -> std::io::Result<()> {
    sync_tree(stage)?;
    let parent = parent_of(out);
    if std::fs::symlink_metadata(out).is_err() {
        std::fs::rename(stage, out)?;
    } else if exchange(stage, out)? {
        std::fs::remove_dir_all(stage)?; // now holds the old folder
    } else {
        let old = parent.join(format!(".{}.old-{}", dir_name(out), std::process::id()));
        std::fs::rename(out, &old)?;
        std::fs::rename(stage, out)?;
        File::open(parent)?.sync_all()?;
        std::fs::remove_dir_all(&old)?;
    }
    File::open(parent)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replace_dir_swaps_whole_folders_and_cleans_stale_staging() {
        let t = tempfile::tempdir().unwrap();
        let out = t.path().join("ckpt");
        let s = staging_dir(&out).unwrap();
        std::fs::write(s.join("a"), "1").unwrap();
        replace_dir(&s, &out).unwrap();
        assert_eq!(std::fs::read_to_string(out.join("a")).unwrap(), "1");
        // A killed writer's staging folder is cleared by the next staging_dir.
        std::fs::create_dir(t.path().join(".ckpt.staging-999999")).unwrap();
        let s = staging_dir(&out).unwrap();
        assert!(!t.path().join(".ckpt.staging-999999").exists());
        std::fs::write(s.join("b"), "2").unwrap();
        replace_dir(&s, &out).unwrap();
        assert!(!out.join("a").exists(), "the old folder's files must be gone");
        assert_eq!(std::fs::read_to_string(out.join("b")).unwrap(), "2");
        let left: Vec<_> = std::fs::read_dir(t.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(left, vec![std::ffi::OsString::from("ckpt")]);
    }
}
