//! Hugging Face checkpoints: memory-mapped safetensors loading (single `model.safetensors`
//! or sharded via `model.safetensors.index.json`) into a `VarStore`, and saving in the
//! same layout (config.json, weights, generation_config.json, tokenizer files) so that
//! `transformers.AutoModelForCausalLM.from_pretrained(dir)` reads it without conversion.

use super::config::Config;
use super::memory;
use super::qwen::Qwen;
use super::{check_dtype_device, device_name, DType, ModelError, Result};
use crate::fingerprint::{self, Fingerprint};
use memmap2::Mmap;
use safetensors::tensor::{Dtype as StDtype, Metadata, SafeTensors, View};
use serde_json::{json, Value};
use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};
use tch::{nn, Device, Kind, Tensor};

const SINGLE: &str = "model.safetensors";
const INDEX: &str = "model.safetensors.index.json";
/// Files copied verbatim from the source directory when saving, if present.
pub const TOKENIZER_FILES: &[&str] = &[
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "merges.txt",
    "chat_template.jinja",
];

/// One memory-mapped safetensors file with its parsed header.
struct MappedFile {
    path: PathBuf,
    mmap: Mmap,
    header_len: usize,
    meta: Metadata,
}

/// The weights of a checkpoint directory, memory-mapped; tensors are read by name.
pub struct WeightFiles {
    dir: PathBuf,
    files: Vec<MappedFile>,
    /// tensor name → index into `files`
    index: HashMap<String, usize>,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> ModelError + '_ {
    move |source| ModelError::Io { path: path.to_path_buf(), source }
}

impl WeightFiles {
    pub fn open(dir: &Path) -> Result<WeightFiles> {
        let single = dir.join(SINGLE);
        let index_path = dir.join(INDEX);
        let shard_names: Vec<String>;
        let mut weight_map: Option<BTreeMap<String, String>> = None;
        if index_path.exists() {
            let text = std::fs::read_to_string(&index_path).map_err(io_err(&index_path))?;
            let v: Value = serde_json::from_str(&text)
                .map_err(|e| ModelError::InvalidJson { path: index_path.clone(), msg: e.to_string() })?;
            let wm = v.get("weight_map").and_then(Value::as_object).ok_or_else(|| ModelError::InvalidConfig {
                path: index_path.clone(),
                msg: "missing object weight_map".into(),
            })?;
            let mut map = BTreeMap::new();
            for (k, f) in wm {
                let f = f.as_str().ok_or_else(|| ModelError::InvalidConfig {
                    path: index_path.clone(),
                    msg: format!("weight_map[{k}] is not a string"),
                })?;
                map.insert(k.clone(), f.to_string());
            }
            let mut names: Vec<String> = map.values().cloned().collect();
            names.sort();
            names.dedup();
            for n in &names {
                if !dir.join(n).is_file() {
                    return Err(ModelError::MissingShard { shard: dir.join(n), index: index_path.clone() });
                }
            }
            shard_names = names;
            weight_map = Some(map);
        } else if single.is_file() {
            shard_names = vec![SINGLE.to_string()];
        } else {
            return Err(ModelError::NoWeights(dir.to_path_buf()));
        }

        let mut files = Vec::new();
        let mut index = HashMap::new();
        for (fi, name) in shard_names.iter().enumerate() {
            let path = dir.join(name);
            let file = File::open(&path).map_err(io_err(&path))?;
            // SAFETY: the file is opened read-only; we only read from the map while it lives,
            // and checkpoints are not expected to be modified while a model is loading.
            let mmap = unsafe { Mmap::map(&file) }.map_err(io_err(&path))?;
            let (header_len, meta) = SafeTensors::read_metadata(&mmap)
                .map_err(|e| ModelError::Safetensors { path: path.clone(), msg: format!("{e:?}") })?;
            for tname in meta.tensors().keys() {
                index.insert(tname.clone(), fi);
            }
            files.push(MappedFile { path, mmap, header_len, meta });
        }
        if let Some(map) = weight_map {
            // Trust the shard files' own headers, but a name in the index must exist somewhere.
            for (k, f) in map {
                if !index.contains_key(&k) {
                    return Err(ModelError::Safetensors {
                        path: dir.join(f),
                        msg: format!("tensor {k} listed in the index is not in the shard"),
                    });
                }
            }
        }
        Ok(WeightFiles { dir: dir.to_path_buf(), files, index })
    }

    /// The files holding the weights (shards, or the single file), plus the index if sharded,
    /// as names inside the checkpoint folder.
    pub fn file_names(&self) -> Vec<String> {
        let mut v: Vec<String> =
            self.files.iter().filter_map(|f| f.path.file_name().map(|n| n.to_string_lossy().into_owned())).collect();
        if self.dir.join(INDEX).is_file() {
            v.push(INDEX.to_string());
        }
        v
    }

    pub fn contains(&self, name: &str) -> bool {
        self.index.contains_key(name)
    }

    pub fn names(&self) -> impl Iterator<Item = &String> {
        self.index.keys()
    }

    /// Reads tensor `name` (a CPU copy in its stored dtype), checking `expected` shape.
    pub fn read(&self, name: &str, expected: &[i64]) -> Result<Tensor> {
        let fi = *self
            .index
            .get(name)
            .ok_or_else(|| ModelError::MissingTensor { name: name.into(), dir: self.dir.clone() })?;
        let f = &self.files[fi];
        let info = f.meta.info(name).expect("indexed tensor has info");
        let found: Vec<i64> = info.shape.iter().map(|&d| d as i64).collect();
        if found != expected {
            return Err(ModelError::ShapeMismatch { name: name.into(), expected: expected.to_vec(), found });
        }
        let kind = match info.dtype {
            StDtype::F32 => Kind::Float,
            StDtype::BF16 => Kind::BFloat16,
            StDtype::F16 => Kind::Half,
            other => {
                return Err(ModelError::UnsupportedTensorDtype {
                    name: name.into(),
                    file: f.path.clone(),
                    dtype: format!("{other:?}"),
                })
            }
        };
        let (start, end) = info.data_offsets;
        let base = 8 + f.header_len;
        let bytes = f.mmap.get(base + start..base + end).ok_or_else(|| ModelError::Safetensors {
            path: f.path.clone(),
            msg: format!("data of {name} lies outside the file"),
        })?;
        // from_data_size copies, so the mmap's alignment does not matter.
        Ok(Tensor::f_from_data_size(bytes, &found, kind)?)
    }
}

/// A loaded model with the VarStore that owns its parameters.
pub struct LoadedModel {
    /// Parameters under HF names; pass `vs.trainable_variables()` to an optimizer.
    pub vs: nn::VarStore,
    pub model: Qwen,
    pub cfg: Config,
    pub dir: PathBuf,
    pub dtype: DType,
    /// Content identity of the folder it was loaded from (config.json + weight files).
    pub fingerprint: Fingerprint,
}

/// The files that make a checkpoint's identity: config.json and the weight files.
pub fn identity_files(weights: &WeightFiles) -> Vec<String> {
    let mut v = vec!["config.json".to_string()];
    v.extend(weights.file_names());
    v
}

/// Fails before allocating if `cfg`'s parameters cannot fit on `device` in `dtype`.
pub fn check_parameters_fit(cfg: &Config, dtype: DType, device: Device) -> Result<()> {
    let mut plan = memory::Plan::default();
    plan.add(format!("parameters ({dtype})"), memory::parameter_count(cfg) * dtype.kind().elt_size_in_bytes() as f64);
    memory::check_fits("the model", &plan, device)
}

/// Loads `dir` (config.json + safetensors) onto `device` with parameters in `dtype`.
/// Parameters are trainable (requires_grad); wrap inference in `tch::no_grad`.
/// The folder's fingerprint is checked if it has one (else computed); every weight must be finite.
pub fn load_model(dir: &Path, device: Device, dtype: DType) -> Result<LoadedModel> {
    check_dtype_device(dtype, device)?;
    if let Device::Cuda(_) = device {
        if !tch::Cuda::is_available() {
            return Err(ModelError::DeviceUnavailable(device_name(device)));
        }
    }
    let cfg = Config::from_path(dir)?;
    check_parameters_fit(&cfg, dtype, device)?;
    let weights = WeightFiles::open(dir)?;
    let fingerprint = fingerprint::verify(dir, &identity_files(&weights), None)?;
    let mut vs = nn::VarStore::new(device);
    vs.set_kind(dtype.kind());
    let model = Qwen::new(&cfg, vs.root());
    load_weights(&vs, &weights)?;
    Ok(LoadedModel { vs, model, cfg, dir: dir.to_path_buf(), dtype, fingerprint })
}

/// Fails with [`ModelError::NonFiniteWeights`] if `t` holds a NaN or an infinity.
pub fn check_finite(name: &str, t: &Tensor, dir: &Path) -> Result<()> {
    if t.is_floating_point() && !bool::try_from(t.f_isfinite()?.f_all()?)? {
        return Err(ModelError::NonFiniteWeights { name: name.into(), dir: dir.to_path_buf() });
    }
    Ok(())
}

/// Copies every variable of `vs` from the checkpoint (by name, shape-checked, converted
/// to the variable's dtype/device). Extra checkpoint tensors (e.g. a redundant
/// `lm_head.weight` in a tied checkpoint) are ignored.
pub fn load_weights(vs: &nn::VarStore, weights: &WeightFiles) -> Result<()> {
    let mut vars: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    tch::no_grad(|| -> Result<()> {
        for (name, mut var) in vars {
            let src = weights.read(&name, &var.size())?;
            check_finite(&name, &src, &weights.dir)?;
            var.f_copy_(&src)?;
        }
        Ok(())
    })
}

/// Options for [`save_checkpoint`].
#[derive(Debug, Clone)]
pub struct SaveOptions {
    /// Split into shards of at most this many bytes (HF default is 5 GB); a single
    /// `model.safetensors` when everything fits.
    pub max_shard_bytes: usize,
    /// Store in this dtype (default: the parameters' dtype).
    pub dtype: Option<DType>,
    /// Copy generation_config.json / tokenizer files from here if present.
    pub source_dir: Option<PathBuf>,
}

impl Default for SaveOptions {
    fn default() -> Self {
        SaveOptions { max_shard_bytes: 5_000_000_000, dtype: None, source_dir: None }
    }
}

struct OwnedView {
    dtype: StDtype,
    shape: Vec<usize>,
    data: Vec<u8>,
}

impl View for &OwnedView {
    fn dtype(&self) -> StDtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.data)
    }
    fn data_len(&self) -> usize {
        self.data.len()
    }
}

fn tensor_bytes(t: &Tensor, dtype: DType) -> Result<OwnedView> {
    let t = t.f_detach()?.f_to_device(Device::Cpu)?.f_to_kind(dtype.kind())?.f_contiguous()?;
    let numel = t.numel();
    let mut data = vec![0u8; numel * dtype.kind().elt_size_in_bytes()];
    t.f_copy_data_u8(&mut data, numel)?;
    let st = match dtype {
        DType::F32 => StDtype::F32,
        DType::BF16 => StDtype::BF16,
        DType::F16 => StDtype::F16,
    };
    Ok(OwnedView { dtype: st, shape: t.size().iter().map(|&d| d as usize).collect(), data })
}

/// Writes `vs` as an HF checkpoint folder `out_dir`, crash-safely: everything (weights, config,
/// generation config, tokenizer files, `fingerprint.json`) is written into a staging folder
/// beside it, fsynced, then swapped in place of `out_dir` as a whole (see
/// [`crate::durable::replace_dir`]); a previous checkpoint there stays valid until then.
/// Returns the new checkpoint's fingerprint.
pub fn save_checkpoint(vs: &nn::VarStore, cfg: &Config, out_dir: &Path, opts: &SaveOptions) -> Result<Fingerprint> {
    let stage = crate::durable::staging_dir(out_dir).map_err(io_err(out_dir))?;
    write_checkpoint_files(vs, cfg, &stage, opts)?;
    let weights = WeightFiles::open(&stage)?;
    let fp = fingerprint::compute(&stage, &identity_files(&weights))?;
    drop(weights);
    fingerprint::write(&stage, &fp)?;
    crate::durable::replace_dir(&stage, out_dir).map_err(io_err(out_dir))?;
    Ok(fp)
}

/// Writes the files of a checkpoint into `stage`. The source folder of `opts` is read here,
/// before the swap, so saving over the folder a model was loaded from works.
fn write_checkpoint_files(vs: &nn::VarStore, cfg: &Config, stage: &Path, opts: &SaveOptions) -> Result<()> {
    let vars: BTreeMap<String, Tensor> = vs.variables().into_iter().collect();
    let dtype = match opts.dtype {
        Some(d) => d,
        None => vars.values().next().and_then(|t| DType::from_kind(t.kind())).unwrap_or(DType::F32),
    };
    let elt = dtype.kind().elt_size_in_bytes();
    // Greedy shard assignment in name order.
    let mut shards: Vec<Vec<&String>> = vec![vec![]];
    let mut cur = 0usize;
    let mut total = 0usize;
    for (name, t) in &vars {
        let bytes = t.numel() * elt;
        total += bytes;
        if cur > 0 && cur + bytes > opts.max_shard_bytes {
            shards.push(vec![]);
            cur = 0;
        }
        shards.last_mut().unwrap().push(name);
        cur += bytes;
    }
    let n = shards.len();
    let meta = Some(HashMap::from([("format".to_string(), "pt".to_string())]));
    let mut weight_map = BTreeMap::new();
    for (i, names) in shards.iter().enumerate() {
        let fname = if n == 1 { SINGLE.to_string() } else { format!("model-{:05}-of-{:05}.safetensors", i + 1, n) };
        let owned: Vec<(String, OwnedView)> =
            names.iter().map(|k| Ok(((*k).clone(), tensor_bytes(&vars[*k], dtype)?))).collect::<Result<_>>()?;
        let path = stage.join(&fname);
        safetensors::tensor::serialize_to_file(owned.iter().map(|(k, v)| (k.as_str(), v)), &meta, &path)
            .map_err(|e| ModelError::Safetensors { path: path.clone(), msg: format!("{e:?}") })?;
        for k in names {
            weight_map.insert((*k).clone(), fname.clone());
        }
    }
    if n > 1 {
        let index = json!({"metadata": {"total_size": total}, "weight_map": weight_map});
        write_json(&stage.join(INDEX), &index)?;
    }

    // config.json: the original object, with the stored dtype recorded.
    let mut raw = cfg.raw.clone();
    if let Some(o) = raw.as_object_mut() {
        let key = if o.contains_key("torch_dtype") && !o.contains_key("dtype") { "torch_dtype" } else { "dtype" };
        o.insert(key.into(), json!(dtype.hf_name()));
        if !o.contains_key("architectures") {
            o.insert("architectures".into(), json!([cfg.arch.hf_name()]));
        }
    }
    write_json(&stage.join("config.json"), &raw)?;

    // generation_config.json: copied from the source if there is one, else derived.
    let src_gen = opts.source_dir.as_ref().map(|d| d.join("generation_config.json")).filter(|p| p.is_file());
    match src_gen {
        Some(p) => {
            std::fs::copy(&p, stage.join("generation_config.json")).map_err(io_err(&p))?;
        }
        None => {
            let mut g = serde_json::Map::new();
            g.insert("_from_model_config".into(), json!(true));
            if let Some(b) = cfg.bos_token_id {
                g.insert("bos_token_id".into(), json!(b));
            }
            match cfg.eos_token_ids.as_slice() {
                [] => {}
                [e] => {
                    g.insert("eos_token_id".into(), json!(e));
                }
                many => {
                    g.insert("eos_token_id".into(), json!(many));
                }
            }
            if let Some(p) = cfg.pad_token_id {
                g.insert("pad_token_id".into(), json!(p));
            }
            write_json(&stage.join("generation_config.json"), &Value::Object(g))?;
        }
    }
    if let Some(src) = &opts.source_dir {
        for f in TOKENIZER_FILES {
            let (from, to) = (src.join(f), stage.join(f));
            if from.is_file() {
                std::fs::copy(&from, &to).map_err(io_err(&from))?;
            }
        }
    }
    Ok(())
}

fn write_json(path: &Path, v: &Value) -> Result<()> {
    let s = serde_json::to_string_pretty(v).expect("serializable");
    std::fs::write(path, s + "\n").map_err(io_err(path))
}

impl LoadedModel {
    /// Saves the current parameters as an HF checkpoint, copying tokenizer and
    /// generation config files from the directory this model was loaded from.
    pub fn save(&self, out_dir: &Path, opts: &SaveOptions) -> Result<Fingerprint> {
        let mut o = opts.clone();
        if o.source_dir.is_none() {
            o.source_dir = Some(self.dir.clone());
        }
        save_checkpoint(&self.vs, &self.cfg, out_dir, &o)
    }
}
