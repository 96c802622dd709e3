//! The run-folder contract: every stage that writes results into a folder (`sample` now; `train`,
//! `eval` and `report` as they land) goes through [`RunDir`], so a folder never mixes results of
//! different settings, processes or crashes.
//!
//! A run folder holds:
//!
//! | file | what |
//! |---|---|
//! | `.lock` | an exclusive `flock` held for the whole run (released by the kernel when the holder dies, even by `kill -9`); its text names the holder |
//! | `settings.json` | everything that determines the results; written (durably) before any result, and compared with the requested settings on every open |
//! | `manifest.jsonl` | one line per committed result file: `{"name", "records", "bytes", "sha256"}`, appended and fsynced after the file itself is durable |
//! | result files | written whole (temp file, fsync, rename) and counted only once their manifest line is on disk |
//! | `rejected/` | result files that failed their check on resume, moved aside (never deleted, never counted) |
//!
//! Rules, each enforced here:
//! * a second process opening the folder for writing fails at once, naming the holder;
//! * results without `settings.json` are refused (nothing can say what they are);
//! * settings that differ from the stored ones are refused, naming every differing key (unless
//!   the folder holds no results yet: then they are replaced);
//! * on a writing open, every manifest entry is checked (size and sha256 of its file); a file that
//!   fails, or a result file that the manifest does not list (a crash between the write and the
//!   manifest line), is moved to `rejected/` with a warning, so it is regenerated;
//! * a reading open ([`read_verified`]) checks the same and fails on the first mismatch.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

pub const LOCK_FILE: &str = ".lock";
pub const SETTINGS_FILE: &str = "settings.json";
pub const MANIFEST_FILE: &str = "manifest.jsonl";
pub const REJECTED_DIR: &str = "rejected";

/// Errors of the run-folder contract; every message is one line and names the folder or file.
#[derive(Debug, thiserror::Error)]
pub enum RunDirError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{dir} is in use by another process ({holder}); wait for it to finish or stop it")]
    Locked { dir: PathBuf, holder: String },
    #[error("{dir} holds results drawn with different settings ({diff}); use another output folder or the original settings")]
    SettingsMismatch { dir: PathBuf, diff: String },
    #[error("{dir} holds results ({found}) but no {SETTINGS_FILE}, so nothing says how they were made; restore {SETTINGS_FILE} or move the folder aside")]
    ResultsWithoutSettings { dir: PathBuf, found: String },
    #[error("{path}: {msg}")]
    BadFile { path: PathBuf, msg: String },
    #[error("{path} does not match its manifest entry ({msg}): it changed after it was written; rerun the stage that wrote it on this folder to regenerate it")]
    Tampered { path: PathBuf, msg: String },
    #[error("{0} is not a run folder (no {SETTINGS_FILE})")]
    NotARunDir(PathBuf),
}

pub type Result<T, E = RunDirError> = std::result::Result<T, E>;

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> RunDirError + '_ {
    move |source| RunDirError::Io { path: path.to_path_buf(), source }
}

/// One committed result file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// File name inside the run folder.
    pub name: String,
    /// Records in the file (lines, samples, …: the stage's unit).
    pub records: u64,
    pub bytes: u64,
    pub sha256: String,
}

/// sha256 (hex) of a byte string.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// An exclusive lock on a folder, held until dropped (or the process dies).
#[derive(Debug)]
pub struct FolderLock {
    _file: File,
    pub path: PathBuf,
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown host".into())
}

fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// What a lock file says about its holder, for the error a second process gets.
fn describe_holder(text: &str) -> String {
    let Ok(v) = serde_json::from_str::<serde_json::Value>(text) else {
        return "holder unknown: it has not written its name yet".into();
    };
    let pid = v.get("pid").and_then(|p| p.as_u64()).map(|p| p.to_string()).unwrap_or_else(|| "?".into());
    let host = v.get("host").and_then(|h| h.as_str()).unwrap_or("?");
    let cmd = v.get("command").and_then(|c| c.as_str()).unwrap_or("?");
    let since = v.get("since_unix").and_then(|s| s.as_u64()).map(|s| unix_now().saturating_sub(s));
    let ago = since.map(|s| format!(", for {s} s")).unwrap_or_default();
    format!("pid {pid} on {host}: {cmd}{ago}")
}

impl FolderLock {
    /// Takes the exclusive lock of `dir` (created if needed) or fails at once naming the holder.
    pub fn acquire(dir: &Path) -> Result<FolderLock> {
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        let path = dir.join(LOCK_FILE);
        // Never truncate before holding the lock: the holder's text must survive a failed attempt.
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io_err(&path))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                // The holder writes its name right after taking the lock: give it a moment.
                let mut text = String::new();
                for _ in 0..50 {
                    text.clear();
                    let _ = std::io::Seek::rewind(&mut file).and_then(|_| file.read_to_string(&mut text));
                    if serde_json::from_str::<serde_json::Value>(&text).is_ok() {
                        break;
                    }
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                return Err(RunDirError::Locked { dir: dir.to_path_buf(), holder: describe_holder(&text) });
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io_err(&path)(e)),
        }
        let me = serde_json::json!({
            "pid": std::process::id(),
            "host": hostname(),
            "command": std::env::args().collect::<Vec<_>>().join(" "),
            "since_unix": unix_now(),
        });
        file.set_len(0).map_err(io_err(&path))?;
        std::io::Seek::rewind(&mut file).map_err(io_err(&path))?;
        file.write_all(me.to_string().as_bytes()).map_err(io_err(&path))?;
        Ok(FolderLock { _file: file, path })
    }
}

/// Differences between two JSON objects, as `key: stored X, requested Y; …`.
pub fn json_diff(stored: &serde_json::Value, requested: &serde_json::Value) -> String {
    let (Some(a), Some(b)) = (stored.as_object(), requested.as_object()) else {
        return format!("stored {stored}, requested {requested}");
    };
    let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
    keys.sort();
    keys.dedup();
    let none = serde_json::Value::Null;
    keys.into_iter()
        .filter_map(|k| {
            let (x, y) = (a.get(k).unwrap_or(&none), b.get(k).unwrap_or(&none));
            (x != y).then(|| format!("{k}: stored {x}, requested {y}"))
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// What a stage keeps in its run folder.
#[derive(Debug, Clone, Copy)]
pub struct Layout {
    /// Is this file name one of the stage's result files? (Result files not in the manifest are
    /// moved aside on a writing open.)
    pub is_result: fn(&str) -> bool,
}

/// A run folder opened for writing: holds the lock, the settings are checked, the manifest is
/// verified. Commit results with [`RunDir::commit`].
#[derive(Debug)]
pub struct RunDir {
    pub dir: PathBuf,
    entries: BTreeMap<String, Entry>,
    manifest: File,
    _lock: FolderLock,
    /// Warnings raised while opening (files moved aside, torn manifest line dropped).
    pub warnings: Vec<String>,
}

/// Names in `dir` other than the contract's own files and temporaries (the "results").
fn result_like_names(dir: &Path) -> Result<Vec<String>> {
    let mut out = vec![];
    for e in std::fs::read_dir(dir).map_err(io_err(dir))? {
        let e = e.map_err(io_err(dir))?;
        let n = e.file_name().to_string_lossy().into_owned();
        if n.starts_with('.') || n == SETTINGS_FILE || n == REJECTED_DIR {
            continue;
        }
        if n == MANIFEST_FILE && e.metadata().map(|m| m.len() == 0).unwrap_or(false) {
            continue;
        }
        out.push(n);
    }
    out.sort();
    Ok(out)
}

/// Parses manifest text. Returns the entries (a later line for a name replaces an earlier one)
/// and warnings for lines that could not be read (a torn last line after a crash, or damage).
fn parse_manifest(path: &Path, text: &str) -> (BTreeMap<String, Entry>, Vec<String>) {
    let mut entries = BTreeMap::new();
    let mut warnings = vec![];
    let complete = text.ends_with('\n') || text.is_empty();
    let lines: Vec<&str> = text.split('\n').collect();
    let n = lines.len();
    for (i, line) in lines.iter().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        if i + 1 == n && !complete {
            warnings.push(format!("{}: dropped a torn last line (a write was interrupted)", path.display()));
            continue;
        }
        match serde_json::from_str::<Entry>(line) {
            Ok(e) if !e.name.contains('/') && !e.name.starts_with('.') => {
                entries.insert(e.name.clone(), e);
            }
            _ => warnings.push(format!("{}: line {} is unreadable and was dropped", path.display(), i + 1)),
        }
    }
    (entries, warnings)
}

/// Why `entry`'s file does not match it (size and type only, cheap), or `None`.
fn check_entry_shape(dir: &Path, entry: &Entry) -> Option<String> {
    match std::fs::symlink_metadata(dir.join(&entry.name)) {
        Err(_) => Some("the file is missing".into()),
        Ok(m) if !m.is_file() => Some("it is not a regular file".into()),
        Ok(m) if m.len() != entry.bytes => Some(format!("{} bytes, the manifest says {}", m.len(), entry.bytes)),
        Ok(_) => None,
    }
}

/// Why `entry`'s file does not match it (size, type and sha256), or `None` when it does.
fn check_entry(dir: &Path, entry: &Entry) -> Option<String> {
    if let Some(why) = check_entry_shape(dir, entry) {
        return Some(why);
    }
    match crate::fingerprint::digest_file(&dir.join(&entry.name)) {
        Err(e) => Some(format!("unreadable: {e}")),
        Ok(d) if d.sha256 != entry.sha256 => Some("its sha256 differs".into()),
        Ok(_) => None,
    }
}

/// Reads a committed file, checking it against its manifest entry (size and sha256).
pub fn read_entry(dir: &Path, entry: &Entry) -> Result<Vec<u8>> {
    let path = dir.join(&entry.name);
    if let Some(msg) = check_entry_shape(dir, entry) {
        return Err(RunDirError::Tampered { path, msg });
    }
    let bytes = std::fs::read(&path).map_err(io_err(&path))?;
    if sha256_hex(&bytes) != entry.sha256 {
        return Err(RunDirError::Tampered { path, msg: "its sha256 differs".into() });
    }
    Ok(bytes)
}

fn read_settings_value(dir: &Path) -> Result<Option<serde_json::Value>> {
    let path = dir.join(SETTINGS_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| RunDirError::BadFile { path, msg: format!("not valid JSON: {e}") }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err(&path)(e)),
    }
}

impl RunDir {
    /// Opens `dir` for writing results made with `settings`: takes the lock, writes or checks
    /// `settings.json`, verifies the manifest and moves failing or unlisted result files aside.
    pub fn open<S: Serialize>(dir: &Path, settings: &S, layout: Layout) -> Result<RunDir> {
        let lock = FolderLock::acquire(dir)?;
        let requested = serde_json::to_value(settings).expect("settings serialize to JSON");
        let path = dir.join(SETTINGS_FILE);
        match read_settings_value(dir)? {
            // Settings of a run that stopped before committing anything describe nothing: replace them.
            Some(stored) if stored != requested && result_like_names(dir)?.is_empty() => {
                tracing::info!("{} held settings but no results; starting over with the new settings", dir.display());
                let text = serde_json::to_string_pretty(&requested).expect("serializable") + "\n";
                crate::durable::write(&path, text.as_bytes()).map_err(io_err(&path))?;
            }
            Some(stored) if stored != requested => {
                return Err(RunDirError::SettingsMismatch {
                    dir: dir.to_path_buf(),
                    diff: json_diff(&stored, &requested),
                })
            }
            Some(_) => {}
            None => {
                let found = result_like_names(dir)?;
                if !found.is_empty() {
                    let shown: Vec<&str> = found.iter().take(3).map(String::as_str).collect();
                    let more = if found.len() > 3 { format!(" and {} more", found.len() - 3) } else { String::new() };
                    return Err(RunDirError::ResultsWithoutSettings {
                        dir: dir.to_path_buf(),
                        found: format!("{}{more}", shown.join(", ")),
                    });
                }
                let text = serde_json::to_string_pretty(&requested).expect("serializable") + "\n";
                crate::durable::write(&path, text.as_bytes()).map_err(io_err(&path))?;
            }
        }
        remove_temporaries(dir)?;

        // Verify the manifest; keep what passes; move the rest aside.
        let mpath = dir.join(MANIFEST_FILE);
        let text = match std::fs::read(&mpath) {
            Ok(b) => String::from_utf8_lossy(&b).into_owned(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(io_err(&mpath)(e)),
        };
        let (listed, mut warnings) = parse_manifest(&mpath, &text);
        let mut entries = BTreeMap::new();
        for (name, e) in listed {
            match check_entry(dir, &e) {
                None => {
                    entries.insert(name, e);
                }
                Some(why) => {
                    let moved = reject(dir, &name)?;
                    warnings.push(format!("{}: {why}; {moved}; it will be regenerated", dir.join(&name).display()));
                }
            }
        }
        for name in result_like_names(dir)? {
            if (layout.is_result)(&name) && !entries.contains_key(&name) {
                let moved = reject(dir, &name)?;
                warnings.push(format!(
                    "{}: not in the manifest (a run stopped between writing it and recording it); {moved}; it will be regenerated",
                    dir.join(&name).display()
                ));
            }
        }
        // Rewrite the manifest compactly (durably) so appends start from a clean, verified file.
        let mut compact = String::new();
        for e in entries.values() {
            compact.push_str(&serde_json::to_string(e).expect("serializable"));
            compact.push('\n');
        }
        if compact != text {
            crate::durable::write(&mpath, compact.as_bytes()).map_err(io_err(&mpath))?;
        }
        let manifest = OpenOptions::new().append(true).create(true).open(&mpath).map_err(io_err(&mpath))?;
        for w in &warnings {
            tracing::warn!("{w}");
        }
        Ok(RunDir { dir: dir.to_path_buf(), entries, manifest, _lock: lock, warnings })
    }

    /// The verified committed entries, by name.
    pub fn entries(&self) -> &BTreeMap<String, Entry> {
        &self.entries
    }

    pub fn is_committed(&self, name: &str) -> bool {
        self.entries.contains_key(name)
    }

    /// Durably writes result file `name` (`records` records) and records it in the manifest.
    /// A crash before the manifest line is on disk leaves a file that the next open moves aside.
    pub fn commit(&mut self, name: &str, bytes: &[u8], records: u64) -> Result<()> {
        let path = self.dir.join(name);
        crate::durable::write(&path, bytes).map_err(io_err(&path))?;
        let e = Entry { name: name.to_string(), records, bytes: bytes.len() as u64, sha256: sha256_hex(bytes) };
        let mpath = self.dir.join(MANIFEST_FILE);
        let mut line = serde_json::to_string(&e).expect("serializable");
        line.push('\n');
        self.manifest.write_all(line.as_bytes()).map_err(io_err(&mpath))?;
        self.manifest.sync_data().map_err(io_err(&mpath))?;
        self.entries.insert(name.to_string(), e);
        Ok(())
    }
}

/// Moves `dir/name` into `dir/rejected/` under a fresh name; returns a phrase for the warning.
fn reject(dir: &Path, name: &str) -> Result<String> {
    let src = dir.join(name);
    if std::fs::symlink_metadata(&src).is_err() {
        return Ok("nothing to move aside".into());
    }
    let rej = dir.join(REJECTED_DIR);
    std::fs::create_dir_all(&rej).map_err(io_err(&rej))?;
    let mut dst = rej.join(format!("{name}.{}", unix_now()));
    let mut i = 1;
    while dst.exists() {
        dst = rej.join(format!("{name}.{}.{i}", unix_now()));
        i += 1;
    }
    std::fs::rename(&src, &dst).map_err(io_err(&src))?;
    File::open(dir).and_then(|d| d.sync_all()).map_err(io_err(dir))?;
    Ok(format!("moved to {}", dst.display()))
}

/// Removes temporary files (`.NAME.PID.tmp`) that killed writers left behind.
fn remove_temporaries(dir: &Path) -> Result<()> {
    for e in std::fs::read_dir(dir).map_err(io_err(dir))? {
        let p = e.map_err(io_err(dir))?.path();
        let n = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if n.starts_with('.') && n.ends_with(".tmp") && p.is_file() {
            std::fs::remove_file(&p).map_err(io_err(&p))?;
        }
    }
    Ok(())
}

/// A run folder read without writing (no lock): its settings and the committed entries. Each
/// entry's file exists with the recorded size; read it with [`read_entry`], which checks its sha256.
pub struct Verified<S> {
    pub settings: S,
    pub entries: Vec<Entry>,
    /// Result files present but not committed (ignored; a resume moves them aside).
    pub uncommitted: Vec<String>,
}

/// Reads `dir`'s settings and verified manifest for evaluation.
pub fn read_verified<S: DeserializeOwned>(dir: &Path, layout: Layout) -> Result<Verified<S>> {
    let Some(value) = read_settings_value(dir)? else {
        if dir.is_dir() && !result_like_names(dir)?.is_empty() {
            let found = result_like_names(dir)?.into_iter().take(3).collect::<Vec<_>>().join(", ");
            return Err(RunDirError::ResultsWithoutSettings { dir: dir.to_path_buf(), found });
        }
        return Err(RunDirError::NotARunDir(dir.to_path_buf()));
    };
    let spath = dir.join(SETTINGS_FILE);
    let settings: S =
        serde_json::from_value(value).map_err(|e| RunDirError::BadFile { path: spath, msg: e.to_string() })?;
    let mpath = dir.join(MANIFEST_FILE);
    let text = match std::fs::read(&mpath) {
        Ok(b) => String::from_utf8_lossy(&b).into_owned(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(io_err(&mpath)(e)),
    };
    // A writer may be appending right now: a torn last line is simply not committed yet.
    let (listed, _) = parse_manifest(&mpath, &text);
    let mut entries = Vec::with_capacity(listed.len());
    for e in listed.into_values() {
        if let Some(why) = check_entry_shape(dir, &e) {
            return Err(RunDirError::Tampered { path: dir.join(&e.name), msg: why });
        }
        entries.push(e);
    }
    let uncommitted = result_like_names(dir)?
        .into_iter()
        .filter(|n| (layout.is_result)(n) && !entries.iter().any(|e| &e.name == n))
        .collect();
    Ok(Verified { settings, entries, uncommitted })
}

#[cfg(test)]
mod tests {
    use super::*;

    const LAYOUT: Layout = Layout { is_result: |n| n.starts_with("part-") };

    #[derive(Serialize, Deserialize, PartialEq, Debug)]
    struct S {
        a: u32,
        b: String,
    }

    #[test]
    fn second_open_fails_naming_the_holder_and_lock_is_released_on_drop() {
        let t = tempfile::tempdir().unwrap();
        let s = S { a: 1, b: "x".into() };
        let held = RunDir::open(t.path(), &s, LAYOUT).unwrap();
        let e = RunDir::open(t.path(), &s, LAYOUT).unwrap_err().to_string();
        assert!(e.contains("in use by another process") && e.contains(&format!("pid {}", std::process::id())), "{e}");
        drop(held);
        RunDir::open(t.path(), &s, LAYOUT).unwrap();
    }

    #[test]
    fn settings_mismatch_names_keys_and_results_need_settings() {
        let t = tempfile::tempdir().unwrap();
        // A run that stopped before committing anything leaves settings that describe nothing.
        drop(RunDir::open(t.path(), &S { a: 0, b: "y".into() }, LAYOUT).unwrap());
        let mut r = RunDir::open(t.path(), &S { a: 1, b: "x".into() }, LAYOUT).unwrap();
        r.commit("part-0", b"hello\n", 1).unwrap();
        drop(r);
        let e = RunDir::open(t.path(), &S { a: 2, b: "x".into() }, LAYOUT).unwrap_err().to_string();
        assert!(e.contains("a: stored 1, requested 2") && !e.contains("b:"), "{e}");
        std::fs::remove_file(t.path().join(SETTINGS_FILE)).unwrap();
        let e = RunDir::open(t.path(), &S { a: 2, b: "x".into() }, LAYOUT).unwrap_err().to_string();
        assert!(e.contains("no settings.json") && e.contains("part-0"), "{e}");
        let e = read_verified::<S>(t.path(), LAYOUT).err().unwrap().to_string();
        assert!(e.contains("no settings.json"), "{e}");
    }

    #[test]
    fn damaged_and_unlisted_results_are_moved_aside_on_write_and_refused_on_read() {
        let t = tempfile::tempdir().unwrap();
        let s = S { a: 1, b: "x".into() };
        let mut r = RunDir::open(t.path(), &s, LAYOUT).unwrap();
        for i in 0..4 {
            r.commit(&format!("part-{i}"), format!("record {i}\n").as_bytes(), 1).unwrap();
        }
        drop(r);
        let v = read_verified::<S>(t.path(), LAYOUT).unwrap();
        assert_eq!((v.settings, v.entries.len()), (s, 4));
        let s = S { a: 1, b: "x".into() };
        std::fs::write(t.path().join("part-0"), "record X\n").unwrap(); // same size, other bytes
        std::fs::write(t.path().join("part-1"), "").unwrap(); // emptied
        std::fs::remove_file(t.path().join("part-2")).unwrap();
        std::fs::create_dir(t.path().join("part-2")).unwrap(); // a folder in its place
        std::fs::write(t.path().join("part-9"), "stray\n").unwrap(); // never committed
        let v = read_verified::<S>(t.path(), LAYOUT).err().unwrap().to_string();
        assert!(v.contains("part-1") && v.contains("0 bytes"), "{v}");
        let entry0 = Entry { name: "part-0".into(), records: 1, bytes: 9, sha256: sha256_hex(b"record 0\n") };
        let e = read_entry(t.path(), &entry0).unwrap_err().to_string();
        assert!(e.contains("part-0") && e.contains("sha256 differs"), "{e}");
        // torn last manifest line
        let mut m = OpenOptions::new().append(true).open(t.path().join(MANIFEST_FILE)).unwrap();
        m.write_all(b"{\"name\":\"part-5\",\"rec").unwrap();
        let r = RunDir::open(t.path(), &s, LAYOUT).unwrap();
        assert_eq!(r.entries().keys().collect::<Vec<_>>(), vec!["part-3"]);
        assert_eq!(r.warnings.len(), 5, "{:?}", r.warnings);
        let rejected = std::fs::read_dir(t.path().join(REJECTED_DIR)).unwrap().count();
        assert_eq!(rejected, 4);
        drop(r);
        let v = read_verified::<S>(t.path(), LAYOUT).unwrap();
        assert_eq!(v.entries.len(), 1);
        assert!(v.uncommitted.is_empty());
    }
}
