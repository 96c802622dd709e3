//! Content fingerprints of model folders: a model is identified by the sha256 of its files, never
//! by names, paths or sizes.
//!
//! `fingerprint.json` is written beside a checkpoint or an export when it is made (by this harness)
//! and checked every time it is opened: each listed file is re-hashed (streamed, with a progress
//! bar on a terminal for big files) and a file that changed is an error naming it. A folder made
//! elsewhere (a Hugging Face download) has no `fingerprint.json`: its fingerprint is computed on
//! open and not written (the folder is the user's).
//!
//! The identity of a model is [`Fingerprint::sha256`]: sha256 over the sorted lines
//! `name \t bytes \t sha256`, so it changes when any weight, the graph or the config changes.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};

pub const FINGERPRINT_FILE: &str = "fingerprint.json";

/// Files at least this big get a progress bar while hashed (on a terminal).
const PROGRESS_BYTES: u64 = 256 << 20;

#[derive(Debug, thiserror::Error)]
pub enum FingerprintError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not a valid fingerprint file: {msg}")]
    Bad { path: PathBuf, msg: String },
    #[error("{path} does not match {FINGERPRINT_FILE} ({msg}): the folder changed after it was written; write it again (export / save) instead of editing it")]
    Mismatch { path: PathBuf, msg: String },
    #[error("{dir} has no {FINGERPRINT_FILE}: an interrupted or pre-fingerprint {what}; make it again")]
    Missing { dir: PathBuf, what: &'static str },
}

pub type Result<T, E = FingerprintError> = std::result::Result<T, E>;

/// Size and sha256 of one file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileDigest {
    pub bytes: u64,
    pub sha256: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fingerprint {
    /// The identity: sha256 over the sorted `name \t bytes \t sha256` lines of `files`.
    pub sha256: String,
    pub files: BTreeMap<String, FileDigest>,
}

impl Fingerprint {
    pub fn from_files(files: BTreeMap<String, FileDigest>) -> Fingerprint {
        let mut h = Sha256::new();
        for (name, d) in &files {
            h.update(format!("{name}\t{}\t{}\n", d.bytes, d.sha256).as_bytes());
        }
        Fingerprint { sha256: hex::encode(h.finalize()), files }
    }

    /// Short form for messages and settings: the first 16 hex digits.
    pub fn short(&self) -> &str {
        &self.sha256[..16.min(self.sha256.len())]
    }
}

/// A writer that hashes what passes through it (so a file is fingerprinted as it is written).
pub struct HashingWriter<W: Write> {
    inner: W,
    hasher: Sha256,
    bytes: u64,
}

impl<W: Write> HashingWriter<W> {
    pub fn new(inner: W) -> Self {
        HashingWriter { inner, hasher: Sha256::new(), bytes: 0 }
    }
    pub fn finish(self) -> (W, FileDigest) {
        (self.inner, FileDigest { bytes: self.bytes, sha256: hex::encode(self.hasher.finalize()) })
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Digest of bytes in memory.
pub fn digest_bytes(bytes: &[u8]) -> FileDigest {
    FileDigest { bytes: bytes.len() as u64, sha256: hex::encode(Sha256::digest(bytes)) }
}

/// Streams `path` through sha256 (1 MiB reads); a progress bar for big files on a terminal.
pub fn digest_file(path: &Path) -> Result<FileDigest> {
    let io = |source| FingerprintError::Io { path: path.to_path_buf(), source };
    let mut f = std::fs::File::open(path).map_err(io)?;
    let len = f.metadata().map_err(io)?.len();
    let pb = (len >= PROGRESS_BYTES && std::io::stderr().is_terminal()).then(|| {
        let pb = ProgressBar::new(len);
        pb.set_draw_target(ProgressDrawTarget::stderr());
        pb.set_style(
            ProgressStyle::with_template("{msg} {bar:30} {bytes}/{total_bytes} {bytes_per_sec}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        pb.set_message(format!("sha256 {}", path.file_name().unwrap_or_default().to_string_lossy()));
        pb
    });
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0u64;
    loop {
        let r = f.read(&mut buf).map_err(io)?;
        if r == 0 {
            break;
        }
        h.update(&buf[..r]);
        n += r as u64;
        if let Some(pb) = &pb {
            pb.set_position(n);
        }
    }
    if let Some(pb) = pb {
        pb.finish_and_clear();
    }
    Ok(FileDigest { bytes: n, sha256: hex::encode(h.finalize()) })
}

/// Hashes `names` (files inside `dir`).
pub fn compute(dir: &Path, names: &[String]) -> Result<Fingerprint> {
    let mut files = BTreeMap::new();
    for n in names {
        files.insert(n.clone(), digest_file(&dir.join(n))?);
    }
    Ok(Fingerprint::from_files(files))
}

/// Writes `dir/fingerprint.json` durably.
pub fn write(dir: &Path, fp: &Fingerprint) -> Result<()> {
    let path = dir.join(FINGERPRINT_FILE);
    let text = serde_json::to_string_pretty(fp).expect("serializable") + "\n";
    crate::durable::write(&path, text.as_bytes()).map_err(|source| FingerprintError::Io { path, source })
}

/// Reads `dir/fingerprint.json`, if there is one.
pub fn read(dir: &Path) -> Result<Option<Fingerprint>> {
    let path = dir.join(FINGERPRINT_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(FingerprintError::Io { path, source }),
    };
    let fp: Fingerprint =
        serde_json::from_str(&text).map_err(|e| FingerprintError::Bad { path: path.clone(), msg: e.to_string() })?;
    if Fingerprint::from_files(fp.files.clone()).sha256 != fp.sha256 {
        return Err(FingerprintError::Bad { path, msg: "its sha256 does not match its file list".into() });
    }
    Ok(Some(fp))
}

/// Checks every file listed in the stored fingerprint against its content (and that every name
/// in `expected` is listed); without a stored fingerprint, computes one over `expected`
/// (`required`: a missing fingerprint is an error instead).
pub fn verify(dir: &Path, expected: &[String], required: Option<&'static str>) -> Result<Fingerprint> {
    let Some(stored) = read(dir)? else {
        if let Some(what) = required {
            return Err(FingerprintError::Missing { dir: dir.to_path_buf(), what });
        }
        return compute(dir, expected);
    };
    let fpath = dir.join(FINGERPRINT_FILE);
    if let Some(n) = expected.iter().find(|n| !stored.files.contains_key(*n)) {
        return Err(FingerprintError::Mismatch {
            path: dir.join(n),
            msg: format!("{} does not list it", fpath.display()),
        });
    }
    for (name, want) in &stored.files {
        let path = dir.join(name);
        if !path.is_file() {
            return Err(FingerprintError::Mismatch { path, msg: "the file is missing".into() });
        }
        let got = digest_file(&path)?;
        if got.bytes != want.bytes {
            return Err(FingerprintError::Mismatch {
                path,
                msg: format!("{} bytes, recorded {}", got.bytes, want.bytes),
            });
        }
        if got.sha256 != want.sha256 {
            return Err(FingerprintError::Mismatch { path, msg: "its sha256 differs".into() });
        }
    }
    Ok(stored)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_follows_content_and_verify_names_the_changed_file() {
        let t = tempfile::tempdir().unwrap();
        std::fs::write(t.path().join("a.bin"), [1u8, 2, 3]).unwrap();
        std::fs::write(t.path().join("b.json"), "{}").unwrap();
        let names = vec!["a.bin".to_string(), "b.json".to_string()];
        let fp = compute(t.path(), &names).unwrap();
        write(t.path(), &fp).unwrap();
        assert_eq!(verify(t.path(), &names, Some("export")).unwrap(), fp);
        // Same size, other content: caught.
        std::fs::write(t.path().join("a.bin"), [1u8, 2, 4]).unwrap();
        let e = verify(t.path(), &names, None).unwrap_err().to_string();
        assert!(e.contains("a.bin") && e.contains("sha256 differs"), "{e}");
        let fp2 = compute(t.path(), &names).unwrap();
        assert_ne!(fp2.sha256, fp.sha256);
        // The streamed hash equals the in-memory one and the hashing writer's.
        let mut w = HashingWriter::new(Vec::new());
        w.write_all(&[1u8, 2, 4]).unwrap();
        let (_, d) = w.finish();
        assert_eq!(d, digest_bytes(&[1, 2, 4]));
        assert_eq!(d, fp2.files["a.bin"]);
        std::fs::remove_file(t.path().join(FINGERPRINT_FILE)).unwrap();
        let e = verify(t.path(), &names, Some("export")).unwrap_err().to_string();
        assert!(e.contains("no fingerprint.json"), "{e}");
    }
}
