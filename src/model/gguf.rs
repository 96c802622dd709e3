//! GGUF (llama.cpp's model file) → a Hugging Face model folder that transformers loads unchanged:
//! `config.json` (`LlamaForCausalLM`), `model.safetensors` (dequantized to f32 or bf16),
//! `generation_config.json`, `tokenizer.json` and `tokenizer_config.json` (with the chat template),
//! all built from the file's metadata the way transformers' own GGUF loader builds them.
//!
//! The reader is ours (about 150 lines): the small GGUF crates on crates.io either hide the offset
//! of the tensor data (`gguf`), recurse on nested arrays so that a crafted file overflows the
//! stack, or switch on serde_json's `arbitrary_precision` for the whole build (`gguf-rs`, which
//! would change how every JSON number we hash is parsed), and candle's reader comes with a whole
//! tensor library. Every length in the file is checked against the bytes that remain, so a
//! truncated or malformed file is a one-line error naming the byte offset, never a panic.
//!
//! Supported tensor types: F32, F16, BF16, Q4_0, Q4_1, Q8_0 (SmolLM2-135M-Instruct.Q4_1.gguf
//! uses Q4_1, Q8_0 and F32); others are refused by name. llama.cpp stores the q/k projection rows
//! permuted for its interleaved RoPE; they are permuted back as transformers does.

use super::DType;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: not a valid GGUF file: {msg} (at byte {offset})")]
    Malformed { path: PathBuf, offset: usize, msg: String },
    #[error("{path}: {msg}")]
    Unsupported { path: PathBuf, msg: String },
    #[error("{path}: metadata {key}: {msg}")]
    Metadata { path: PathBuf, key: String, msg: String },
    #[error("{path}: tensor {name}: {msg}")]
    Tensor { path: PathBuf, name: String, msg: String },
    #[error("writing {path}: {msg}")]
    Write { path: PathBuf, msg: String },
}

pub type Result<T, E = GgufError> = std::result::Result<T, E>;

/// A metadata value (integers widened; nested arrays are refused when read).
#[derive(Debug, Clone, PartialEq)]
pub enum Meta {
    Uint(u64),
    Int(i64),
    Float(f64),
    Bool(bool),
    Str(String),
    Array(Vec<Meta>),
}

impl Meta {
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Meta::Uint(v) => Some(v),
            Meta::Int(v) if v >= 0 => Some(v as u64),
            _ => None,
        }
    }
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Meta::Float(v) => Some(v),
            Meta::Uint(v) => Some(v as f64),
            Meta::Int(v) => Some(v as f64),
            _ => None,
        }
    }
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Meta::Str(s) => Some(s),
            _ => None,
        }
    }
    pub fn as_array(&self) -> Option<&[Meta]> {
        match self {
            Meta::Array(a) => Some(a),
            _ => None,
        }
    }
}

/// One tensor's entry in the file's index.
#[derive(Debug, Clone)]
pub struct TensorInfo {
    pub name: String,
    /// ggml order: `dims[0]` varies fastest (the reverse of the PyTorch shape).
    pub dims: Vec<u64>,
    pub ggml_type: u32,
    /// Offset from the start of the data section.
    pub offset: u64,
}

impl TensorInfo {
    /// The PyTorch shape.
    pub fn shape(&self) -> Vec<i64> {
        self.dims.iter().rev().map(|&d| d as i64).collect()
    }
    pub fn numel(&self) -> u64 {
        self.dims.iter().product()
    }
}

/// (name, elements per block, bytes per block) of the ggml types we read.
fn ggml_type(t: u32) -> Option<(&'static str, u64, u64)> {
    Some(match t {
        0 => ("F32", 1, 4),
        1 => ("F16", 1, 2),
        2 => ("Q4_0", 32, 18),
        3 => ("Q4_1", 32, 20),
        8 => ("Q8_0", 32, 34),
        30 => ("BF16", 1, 2),
        _ => return None,
    })
}

/// ggml's name of a type id, for errors.
fn ggml_type_name(t: u32) -> String {
    const NAMES: [&str; 31] = [
        "F32", "F16", "Q4_0", "Q4_1", "Q4_2", "Q4_3", "Q5_0", "Q5_1", "Q8_0", "Q8_1", "Q2_K", "Q3_K", "Q4_K", "Q5_K",
        "Q6_K", "Q8_K", "IQ2_XXS", "IQ2_XS", "IQ3_XXS", "IQ1_S", "IQ4_NL", "IQ3_S", "IQ2_S", "IQ4_XS", "I8", "I16",
        "I32", "I64", "F64", "IQ1_M", "BF16",
    ];
    NAMES.get(t as usize).map_or_else(|| format!("type id {t}"), |n| format!("{n} (type id {t})"))
}

/// A parsed GGUF file, its bytes in memory.
pub struct GgufFile {
    pub path: PathBuf,
    pub version: u32,
    pub meta: BTreeMap<String, Meta>,
    pub tensors: Vec<TensorInfo>,
    data_start: usize,
    bytes: Vec<u8>,
}

struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
    path: &'a Path,
}

impl<'a> Cursor<'a> {
    fn bad(&self, msg: impl Into<String>) -> GgufError {
        GgufError::Malformed { path: self.path.into(), offset: self.pos, msg: msg.into() }
    }
    fn take(&mut self, n: u64, what: &str) -> Result<&'a [u8]> {
        let left = (self.buf.len() - self.pos) as u64;
        if n > left {
            return Err(self.bad(format!("{what} needs {n} bytes, {left} left (truncated file?)")));
        }
        let s = &self.buf[self.pos..self.pos + n as usize];
        self.pos += n as usize;
        Ok(s)
    }
    fn u32(&mut self, what: &str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.take(4, what)?.try_into().expect("4 bytes")))
    }
    fn u64(&mut self, what: &str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.take(8, what)?.try_into().expect("8 bytes")))
    }
    fn string(&mut self, what: &str) -> Result<String> {
        let n = self.u64(what)?;
        let at = self.pos;
        let b = self.take(n, what)?;
        String::from_utf8(b.to_vec()).map_err(|_| GgufError::Malformed {
            path: self.path.into(),
            offset: at,
            msg: format!("{what} is not UTF-8"),
        })
    }
    /// A value of metadata type `t`; arrays hold scalars or strings only.
    fn value(&mut self, t: u32, key: &str, nested: bool) -> Result<Meta> {
        let mut fixed = |n: u64| -> Result<[u8; 8]> {
            let mut a = [0u8; 8];
            a[..n as usize].copy_from_slice(self.take(n, key)?);
            Ok(a)
        };
        Ok(match t {
            0 => Meta::Uint(fixed(1)?[0] as u64),
            1 => Meta::Int(fixed(1)?[0] as i8 as i64),
            2 => Meta::Uint(u16::from_le_bytes(fixed(2)?[..2].try_into().unwrap()) as u64),
            3 => Meta::Int(i16::from_le_bytes(fixed(2)?[..2].try_into().unwrap()) as i64),
            4 => Meta::Uint(u32::from_le_bytes(fixed(4)?[..4].try_into().unwrap()) as u64),
            5 => Meta::Int(i32::from_le_bytes(fixed(4)?[..4].try_into().unwrap()) as i64),
            6 => Meta::Float(f32::from_le_bytes(fixed(4)?[..4].try_into().unwrap()) as f64),
            7 => match fixed(1)?[0] {
                0 => Meta::Bool(false),
                1 => Meta::Bool(true),
                b => return Err(self.bad(format!("{key}: bool byte {b}"))),
            },
            8 => Meta::Str(self.string(key)?),
            9 if !nested => {
                let et = self.u32(key)?;
                let n = self.u64(key)?;
                // Every element takes at least one byte: a longer count is a corrupt file.
                if n > (self.buf.len() - self.pos) as u64 {
                    return Err(self.bad(format!("{key}: array of {n} elements in a shorter file")));
                }
                let mut v = Vec::with_capacity(n as usize);
                for _ in 0..n {
                    v.push(self.value(et, key, true)?);
                }
                Meta::Array(v)
            }
            9 => return Err(self.bad(format!("{key}: nested arrays are not supported"))),
            10 => Meta::Uint(u64::from_le_bytes(fixed(8)?)),
            11 => Meta::Int(i64::from_le_bytes(fixed(8)?)),
            12 => Meta::Float(f64::from_le_bytes(fixed(8)?)),
            _ => return Err(self.bad(format!("{key}: unknown metadata type {t}"))),
        })
    }
}

impl GgufFile {
    /// Reads and indexes `path` (the whole file is read into memory).
    pub fn open(path: &Path) -> Result<GgufFile> {
        let bytes = std::fs::read(path).map_err(|source| GgufError::Io { path: path.into(), source })?;
        let mut c = Cursor { buf: &bytes, pos: 0, path };
        if c.take(4, "magic").ok() != Some(b"GGUF".as_slice()) {
            return Err(GgufError::Malformed { path: path.into(), offset: 0, msg: "no GGUF magic".into() });
        }
        let version = c.u32("version")?;
        if !(2..=3).contains(&version) {
            return Err(GgufError::Unsupported {
                path: path.into(),
                msg: format!("GGUF version {version} (only 2 and 3 are supported)"),
            });
        }
        let n_tensors = c.u64("tensor count")?;
        let n_kv = c.u64("metadata count")?;
        let mut meta = BTreeMap::new();
        for _ in 0..n_kv {
            let key = c.string("metadata key")?;
            let t = c.u32(&key)?;
            let v = c.value(t, &key, false)?;
            meta.insert(key, v);
        }
        // Each tensor entry is at least 24 bytes.
        if n_tensors > (bytes.len() - c.pos) as u64 / 24 {
            return Err(c.bad(format!("{n_tensors} tensors do not fit in the file")));
        }
        let mut tensors = Vec::with_capacity(n_tensors as usize);
        for _ in 0..n_tensors {
            let name = c.string("tensor name")?;
            let nd = c.u32(&name)?;
            if nd == 0 || nd > 4 {
                return Err(c.bad(format!("tensor {name}: {nd} dimensions")));
            }
            let dims = (0..nd).map(|_| c.u64(&name)).collect::<Result<Vec<_>>>()?;
            let ggml_type = c.u32(&name)?;
            let offset = c.u64(&name)?;
            tensors.push(TensorInfo { name, dims, ggml_type, offset });
        }
        let align = match meta.get("general.alignment") {
            None => 32,
            Some(m) => match m.as_u64() {
                Some(a) if a > 0 && a.is_power_of_two() => a,
                _ => return Err(c.bad(format!("general.alignment {m:?} is not a power of two"))),
            },
        };
        let data_start = (c.pos as u64).div_ceil(align) * align;
        let f = GgufFile { path: path.into(), version, meta, tensors, data_start: data_start as usize, bytes };
        // Every tensor's bytes must lie inside the file.
        for t in &f.tensors {
            f.tensor_bytes(t)?;
        }
        Ok(f)
    }

    pub fn get(&self, key: &str) -> Option<&Meta> {
        self.meta.get(key)
    }

    fn meta_err(&self, key: &str, msg: impl Into<String>) -> GgufError {
        GgufError::Metadata { path: self.path.clone(), key: key.into(), msg: msg.into() }
    }

    pub fn u64(&self, key: &str) -> Result<u64> {
        let m = self.get(key).ok_or_else(|| self.meta_err(key, "missing"))?;
        m.as_u64().ok_or_else(|| self.meta_err(key, format!("expected an unsigned integer, got {m:?}")))
    }

    pub fn f64(&self, key: &str) -> Result<f64> {
        let m = self.get(key).ok_or_else(|| self.meta_err(key, "missing"))?;
        m.as_f64().ok_or_else(|| self.meta_err(key, format!("expected a number, got {m:?}")))
    }

    pub fn str(&self, key: &str) -> Result<&str> {
        let m = self.get(key).ok_or_else(|| self.meta_err(key, "missing"))?;
        m.as_str().ok_or_else(|| self.meta_err(key, "expected a string"))
    }

    /// A string array (e.g. `tokenizer.ggml.tokens`).
    pub fn strings(&self, key: &str) -> Result<Vec<&str>> {
        let m = self.get(key).ok_or_else(|| self.meta_err(key, "missing"))?;
        let a = m.as_array().ok_or_else(|| self.meta_err(key, "expected an array"))?;
        a.iter().map(|v| v.as_str().ok_or_else(|| self.meta_err(key, "expected an array of strings"))).collect()
    }

    fn tensor_err(&self, name: &str, msg: impl Into<String>) -> GgufError {
        GgufError::Tensor { path: self.path.clone(), name: name.into(), msg: msg.into() }
    }

    /// The raw bytes of a tensor (checked against the file's length and the type's block size).
    fn tensor_bytes(&self, t: &TensorInfo) -> Result<&[u8]> {
        let (tname, block, bsize) = ggml_type(t.ggml_type).ok_or_else(|| {
            self.tensor_err(
                &t.name,
                format!(
                    "GGML type {} is not supported (supported: F32, F16, BF16, Q4_0, Q4_1, Q8_0)",
                    ggml_type_name(t.ggml_type)
                ),
            )
        })?;
        let n = t.dims.iter().try_fold(1u64, |a, &d| a.checked_mul(d));
        let n = n.ok_or_else(|| self.tensor_err(&t.name, format!("dimensions {:?} overflow", t.dims)))?;
        if !n.is_multiple_of(block) || !t.dims[0].is_multiple_of(block) {
            return Err(
                self.tensor_err(&t.name, format!("{tname} rows of {} are not whole blocks of {block}", t.dims[0]))
            );
        }
        let len = n / block * bsize;
        let start = (self.data_start as u64).checked_add(t.offset);
        let end = start.and_then(|s| s.checked_add(len));
        match (start, end) {
            (Some(s), Some(e)) if e <= self.bytes.len() as u64 => Ok(&self.bytes[s as usize..e as usize]),
            _ => Err(self.tensor_err(
                &t.name,
                format!(
                    "its {len} bytes at data offset {} run past the end of the file ({} bytes): truncated?",
                    t.offset,
                    self.bytes.len()
                ),
            )),
        }
    }

    /// A tensor dequantized to f32, in PyTorch (row-major, [`TensorInfo::shape`]) order.
    pub fn tensor_f32(&self, t: &TensorInfo) -> Result<Vec<f32>> {
        let b = self.tensor_bytes(t)?;
        let f16 = |i: usize| half::f16::from_le_bytes([b[i], b[i + 1]]).to_f32();
        let mut out = Vec::with_capacity(t.numel() as usize);
        match t.ggml_type {
            0 => out.extend(b.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap()))),
            1 => out.extend(b.chunks_exact(2).map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())),
            30 => out.extend(b.chunks_exact(2).map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())),
            // Q4_0: f16 scale d, 16 bytes of nibbles; x = (q - 8)·d; low nibbles first, then high.
            2 => {
                for (k, _) in b.chunks_exact(18).enumerate() {
                    let (d, qs) = (f16(k * 18), &b[k * 18 + 2..k * 18 + 18]);
                    out.extend(qs.iter().map(|&q| ((q & 0xF) as f32 - 8.0) * d));
                    out.extend(qs.iter().map(|&q| ((q >> 4) as f32 - 8.0) * d));
                }
            }
            // Q4_1: f16 scale d and minimum m, 16 bytes of nibbles; x = q·d + m.
            3 => {
                for (k, _) in b.chunks_exact(20).enumerate() {
                    let (d, m, qs) = (f16(k * 20), f16(k * 20 + 2), &b[k * 20 + 4..k * 20 + 20]);
                    out.extend(qs.iter().map(|&q| (q & 0xF) as f32 * d + m));
                    out.extend(qs.iter().map(|&q| (q >> 4) as f32 * d + m));
                }
            }
            // Q8_0: f16 scale d, 32 signed bytes; x = q·d.
            8 => {
                for (k, _) in b.chunks_exact(34).enumerate() {
                    let d = f16(k * 34);
                    out.extend(b[k * 34 + 2..k * 34 + 34].iter().map(|&q| q as i8 as f32 * d));
                }
            }
            _ => unreachable!("tensor_bytes refuses other types"),
        }
        Ok(out)
    }
}

/// Undoes llama.cpp's q/k row permutation (rows grouped per head as [2, dim/2] → [dim/2, 2]), as
/// transformers' GGUF loader does: `w.reshape(heads, dim/2, 2, cols).swapaxes(1, 2)`.
fn unpermute_rows(w: &[f32], rows: usize, cols: usize, heads: usize) -> Vec<f32> {
    let half = rows / heads / 2;
    let mut out = vec![0f32; w.len()];
    for h in 0..heads {
        for i in 0..half {
            for j in 0..2 {
                // source row (h, i, j) of [heads, half, 2] goes to (h, j, i) of [heads, 2, half]
                let src = (h * half + i) * 2 + j;
                let dst = (h * 2 + j) * half + i;
                out[dst * cols..(dst + 1) * cols].copy_from_slice(&w[src * cols..(src + 1) * cols]);
            }
        }
    }
    out
}

/// GPT-2's byte → printable character table (the byte-level BPE alphabet).
fn bytes_to_unicode() -> [char; 256] {
    let mut table = ['\0'; 256];
    let mut n = 0u32;
    for b in 0..=255u32 {
        let printable = (33..=126).contains(&b) || (161..=172).contains(&b) || (174..=255).contains(&b);
        table[b as usize] = if printable {
            char::from_u32(b).expect("latin-1")
        } else {
            n += 1;
            char::from_u32(255 + n).expect("valid")
        };
    }
    table
}

/// What `import` wrote.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ImportSummary {
    pub name: String,
    pub parameters: u64,
    pub tensors: usize,
    pub layers: u64,
    pub vocab_size: u64,
    pub dtype: String,
    /// GGUF tensor types and how many tensors of each.
    pub source_types: BTreeMap<String, usize>,
}

/// `tokenizer.json` for a `gpt2` (byte-level BPE) GGUF vocabulary, as transformers builds it:
/// the BPE model over the tokens (re-spelled in the byte alphabet where needed) and merges,
/// GPT-2's byte-level pre-tokenizer and decoder, control tokens (type 3) as special added tokens,
/// user-defined ones (type 4) as plain added tokens.
fn tokenizer_json(f: &GgufFile, tokens: &[&str]) -> Result<Value> {
    let model = f.str("tokenizer.ggml.model")?;
    if model != "gpt2" {
        return Err(GgufError::Unsupported {
            path: f.path.clone(),
            msg: format!("tokenizer.ggml.model {model:?}: only byte-level BPE (\"gpt2\") vocabularies are supported"),
        });
    }
    // Pre-tokenizers that transformers replaces with their own split regex are not built here.
    let pre = f.get("tokenizer.ggml.pre").and_then(Meta::as_str).unwrap_or("default");
    if !matches!(pre, "default" | "gpt-2" | "gpt2" | "smollm" | "starcoder" | "refact") {
        return Err(GgufError::Unsupported {
            path: f.path.clone(),
            msg: format!(
                "tokenizer.ggml.pre {pre:?}: only GPT-2's byte-level split is supported (e.g. SmolLM2's \"smollm\")"
            ),
        });
    }
    let merges = f.strings("tokenizer.ggml.merges")?;
    let types: Vec<u64> = match f.get("tokenizer.ggml.token_type").and_then(Meta::as_array) {
        Some(a) => a.iter().map(|m| m.as_u64().unwrap_or(1)).collect(),
        None => vec![1; tokens.len()],
    };
    let table = bytes_to_unicode();
    let alphabet: std::collections::HashSet<char> = table.iter().copied().collect();
    let spelled = |t: &str| t.chars().all(|c| alphabet.contains(&c));
    let mut vocab = serde_json::Map::new();
    for (i, t) in tokens.iter().enumerate() {
        let key = if spelled(t) { t.to_string() } else { t.bytes().map(|b| table[b as usize]).collect() };
        vocab.insert(key, json!(i));
    }
    let merges: Vec<Value> = merges
        .iter()
        .map(|m| {
            let mut it = m.splitn(2, ' ');
            json!([it.next().unwrap_or(""), it.next().unwrap_or("")])
        })
        .collect();
    let added = |i: usize, t: &str, special: bool| {
        json!({"id": i, "content": t, "single_word": false, "lstrip": false, "rstrip": false,
               "normalized": false, "special": special})
    };
    let mut added_tokens: Vec<Value> = vec![];
    for (i, (t, &ty)) in tokens.iter().zip(&types).enumerate() {
        if ty == 3 && spelled(t) {
            added_tokens.push(added(i, t, true));
        }
    }
    for (i, (t, &ty)) in tokens.iter().zip(&types).enumerate() {
        if ty == 4 {
            added_tokens.push(added(i, t, false));
        }
    }
    let byte_level = |prefix: bool| json!({"type": "ByteLevel", "add_prefix_space": prefix, "trim_offsets": true, "use_regex": true});
    Ok(json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added_tokens,
        "normalizer": null,
        "pre_tokenizer": byte_level(false),
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [{"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {}
        },
        "decoder": byte_level(true),
        "model": {
            "type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": "",
            "end_of_word_suffix": "", "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
            "vocab": vocab, "merges": merges
        }
    }))
}

/// Converts the GGUF file `gguf` into an HF-layout folder `out` (written whole, atomically:
/// a crash leaves either no folder or the previous one). `dtype`: F32 or BF16 weights.
pub fn import(gguf: &Path, out: &Path, dtype: DType) -> Result<ImportSummary> {
    let f = GgufFile::open(gguf)?;
    let unsupported = |msg: String| GgufError::Unsupported { path: f.path.clone(), msg };
    let arch = f.str("general.architecture")?;
    if arch != "llama" {
        return Err(unsupported(format!("general.architecture {arch:?}: only \"llama\" is supported")));
    }
    if !matches!(dtype, DType::F32 | DType::BF16) {
        return Err(unsupported(format!("--dtype {dtype:?}: f32 or bf16")));
    }
    if let Some(s) = f.get("llama.rope.scaling.type").and_then(Meta::as_str).filter(|s| *s != "none") {
        return Err(unsupported(format!("llama.rope.scaling.type {s:?}: RoPE scaling is not supported")));
    }
    let layers = f.u64("llama.block_count")?;
    let hidden = f.u64("llama.embedding_length")?;
    let heads = f.u64("llama.attention.head_count")?;
    let kv_heads =
        f.get("llama.attention.head_count_kv").map_or(Ok(heads), |_| f.u64("llama.attention.head_count_kv"))?;
    if heads == 0 || kv_heads == 0 || hidden % heads != 0 {
        return Err(
            f.meta_err("llama.attention.head_count", format!("{heads} heads ({kv_heads} kv) for width {hidden}"))
        );
    }
    let head_dim =
        f.get("llama.attention.key_length").map_or(Ok(hidden / heads), |_| f.u64("llama.attention.key_length"))?;
    if let Some(r) = f.get("llama.rope.dimension_count").and_then(Meta::as_u64) {
        if r != head_dim {
            return Err(unsupported(format!("llama.rope.dimension_count {r} != head_dim {head_dim} (partial RoPE)")));
        }
    }
    let inter = f.u64("llama.feed_forward_length")? as i64;
    let tokens = f.strings("tokenizer.ggml.tokens")?;
    let vocab = f.get("llama.vocab_size").and_then(Meta::as_u64).unwrap_or(tokens.len() as u64);
    // Checked before any tensor is dequantized.
    if tokens.len() as u64 != vocab {
        return Err(f.meta_err("tokenizer.ggml.tokens", format!("{} tokens for a vocabulary of {vocab}", tokens.len())));
    }
    let tok = tokenizer_json(&f, &tokens)?;
    let id = |k: &str| f.get(&format!("tokenizer.ggml.{k}")).and_then(Meta::as_u64);
    let tied = !f.tensors.iter().any(|t| t.name == "output.weight");

    // ---- config.json, as transformers builds it from the same metadata ----
    let mut cfg = json!({
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "attention_bias": false,
        "attention_dropout": 0.0,
        "head_dim": head_dim,
        "hidden_act": "silu",
        "hidden_size": hidden,
        "initializer_range": 0.02,
        "intermediate_size": inter,
        "max_position_embeddings": f.u64("llama.context_length")?,
        "mlp_bias": false,
        "num_attention_heads": heads,
        "num_hidden_layers": layers,
        "num_key_value_heads": kv_heads,
        "pretraining_tp": 1,
        "rms_norm_eps": f.f64("llama.attention.layer_norm_rms_epsilon")?,
        "rope_parameters": {
            "rope_theta": f.get("llama.rope.freq_base").and_then(Meta::as_f64).unwrap_or(10000.0),
            "rope_type": "default"
        },
        "tie_word_embeddings": tied,
        "use_cache": true,
        "vocab_size": vocab,
        "dtype": if dtype == DType::BF16 { "bfloat16" } else { "float32" },
    });
    let mut gen = json!({});
    for (k, key) in [
        ("bos_token_id", "bos_token_id"),
        ("eos_token_id", "eos_token_id"),
        ("pad_token_id", "padding_token_id"),
        ("unk_token_id", "unknown_token_id"),
    ] {
        if let Some(v) = id(key) {
            cfg[k] = json!(v);
            if k != "unk_token_id" {
                gen[k] = json!(v);
            }
        }
    }

    // ---- weights ----
    let (h, kv, d) = (heads as usize, kv_heads as usize, head_dim as usize);
    let mut expected: Vec<(String, String, Vec<i64>)> = vec![
        ("token_embd.weight".into(), "model.embed_tokens.weight".into(), vec![vocab as i64, hidden as i64]),
        ("output_norm.weight".into(), "model.norm.weight".into(), vec![hidden as i64]),
    ];
    if !tied {
        expected.push(("output.weight".into(), "lm_head.weight".into(), vec![vocab as i64, hidden as i64]));
    }
    let (c, hd, kvd) = (hidden as i64, (h * d) as i64, (kv * d) as i64);
    for i in 0..layers {
        let p = format!("model.layers.{i}");
        for (g, hf, shape) in [
            ("attn_norm", "input_layernorm", vec![c]),
            ("ffn_norm", "post_attention_layernorm", vec![c]),
            ("attn_q", "self_attn.q_proj", vec![hd, c]),
            ("attn_k", "self_attn.k_proj", vec![kvd, c]),
            ("attn_v", "self_attn.v_proj", vec![kvd, c]),
            ("attn_output", "self_attn.o_proj", vec![c, hd]),
            ("ffn_gate", "mlp.gate_proj", vec![inter, c]),
            ("ffn_up", "mlp.up_proj", vec![inter, c]),
            ("ffn_down", "mlp.down_proj", vec![c, inter]),
        ] {
            expected.push((format!("blk.{i}.{g}.weight"), format!("{p}.{hf}.weight"), shape));
        }
    }
    let by_name: BTreeMap<&str, &TensorInfo> = f.tensors.iter().map(|t| (t.name.as_str(), t)).collect();
    let known: std::collections::HashSet<&str> = expected.iter().map(|e| e.0.as_str()).collect();
    if let Some(extra) = f.tensors.iter().find(|t| !known.contains(t.name.as_str())) {
        return Err(
            f.tensor_err(&extra.name, "not part of a Llama model we can import (no mapping to a transformers name)")
        );
    }
    let mut source_types = BTreeMap::new();
    let mut data: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::with_capacity(expected.len());
    let mut parameters = 0u64;
    for (g, hf, shape) in &expected {
        let t = by_name.get(g.as_str()).ok_or_else(|| f.tensor_err(g, "missing"))?;
        if &t.shape() != shape {
            return Err(f.tensor_err(g, format!("shape {:?}, expected {shape:?} from the metadata", t.shape())));
        }
        let mut w = f.tensor_f32(t)?;
        if let Some(bad) = w.iter().position(|x| !x.is_finite()) {
            return Err(f.tensor_err(g, format!("non-finite value at element {bad}")));
        }
        if g.ends_with(".attn_q.weight") {
            w = unpermute_rows(&w, h * d, c as usize, h);
        } else if g.ends_with(".attn_k.weight") {
            w = unpermute_rows(&w, kv * d, c as usize, kv);
        }
        parameters += w.len() as u64;
        *source_types.entry(ggml_type_name(t.ggml_type)).or_insert(0) += 1;
        let bytes: Vec<u8> = if dtype == DType::BF16 {
            w.iter().flat_map(|&x| half::bf16::from_f32(x).to_le_bytes()).collect()
        } else {
            w.iter().flat_map(|&x| x.to_le_bytes()).collect()
        };
        data.push((hf.clone(), shape.iter().map(|&s| s as usize).collect(), bytes));
    }

    // ---- tokenizer_config.json ----
    let name_of = |k: &str| id(k).and_then(|i| tokens.get(i as usize)).map(|t| json!(t)).unwrap_or(Value::Null);
    let mut tok_cfg = json!({
        "tokenizer_class": "PreTrainedTokenizerFast",
        "add_bos_token": f.get("tokenizer.ggml.add_bos_token") == Some(&Meta::Bool(true)),
        "bos_token": name_of("bos_token_id"),
        "eos_token": name_of("eos_token_id"),
        "pad_token": name_of("padding_token_id"),
        "unk_token": name_of("unknown_token_id"),
        "model_max_length": f.u64("llama.context_length")?,
    });
    if let Some(t) = f.get("tokenizer.chat_template").and_then(Meta::as_str) {
        tok_cfg["chat_template"] = json!(t);
    }

    // ---- write the folder whole ----
    let werr = |p: &Path, e: &dyn std::fmt::Display| GgufError::Write { path: p.into(), msg: e.to_string() };
    let stage = crate::durable::staging_dir(out).map_err(|e| werr(out, &e))?;
    let pretty = |v: &Value| serde_json::to_vec_pretty(v).expect("serializable");
    for (name, v) in [("config.json", &cfg), ("generation_config.json", &gen), ("tokenizer_config.json", &tok_cfg)] {
        std::fs::write(stage.join(name), pretty(v)).map_err(|e| werr(&stage.join(name), &e))?;
    }
    let tok_path = stage.join("tokenizer.json");
    std::fs::write(&tok_path, serde_json::to_vec(&tok).expect("serializable")).map_err(|e| werr(&tok_path, &e))?;
    let st_dtype = if dtype == DType::BF16 { safetensors::Dtype::BF16 } else { safetensors::Dtype::F32 };
    let views = data
        .iter()
        .map(|(n, s, b)| {
            Ok((n.clone(), safetensors::tensor::TensorView::new(st_dtype, s.clone(), b).map_err(|e| werr(out, &e))?))
        })
        .collect::<Result<Vec<_>>>()?;
    let meta: std::collections::HashMap<String, String> = [("format".to_string(), "pt".to_string())].into();
    let st_path = stage.join("model.safetensors");
    safetensors::serialize_to_file(views, &Some(meta), &st_path).map_err(|e| werr(&st_path, &e))?;
    // What we wrote must load: our config parser and the tokenizers crate.
    super::Config::from_path(&stage).map_err(|e| werr(&stage.join("config.json"), &e))?;
    tokenizers::Tokenizer::from_file(&tok_path).map_err(|e| werr(&tok_path, &e))?;
    crate::durable::replace_dir(&stage, out).map_err(|e| werr(out, &e))?;
    Ok(ImportSummary {
        name: f.get("general.name").and_then(Meta::as_str).unwrap_or("").to_string(),
        parameters,
        tensors: data.len(),
        layers,
        vocab_size: vocab,
        dtype: if dtype == DType::BF16 { "bf16".into() } else { "f32".into() },
        source_types,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unpermute_inverts_llama_cpp_permutation() {
        // llama.cpp: w.reshape(heads, 2, half, cols).swapaxes(1, 2) — apply it, then undo it.
        let (heads, half, cols) = (3, 4, 5);
        let rows = heads * 2 * half;
        let w: Vec<f32> = (0..rows * cols).map(|x| x as f32).collect();
        let mut permuted = vec![0f32; w.len()];
        for hh in 0..heads {
            for j in 0..2 {
                for i in 0..half {
                    let src = (hh * 2 + j) * half + i; // (h, j, i) of [heads, 2, half]
                    let dst = (hh * half + i) * 2 + j; // → (h, i, j) of [heads, half, 2]
                    permuted[dst * cols..(dst + 1) * cols].copy_from_slice(&w[src * cols..(src + 1) * cols]);
                }
            }
        }
        assert_ne!(permuted, w);
        assert_eq!(unpermute_rows(&permuted, rows, cols, heads), w);
    }

    #[test]
    fn byte_alphabet_is_gpt2s() {
        let t = bytes_to_unicode();
        assert_eq!(t[b'A' as usize], 'A');
        assert_eq!(t[b' ' as usize], 'Ġ');
        assert_eq!(t[b'\n' as usize], 'Ċ');
        let distinct: std::collections::HashSet<char> = t.iter().copied().collect();
        assert_eq!(distinct.len(), 256);
    }
}
