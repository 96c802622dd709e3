//! `datasets` and `prompt`: the data + prompt stage.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{bail, Context};
use rlvr_decomp::data::{self, Dataset, Problem};
use rlvr_decomp::prompt::Template;

use super::{DataPathArgs, TokenizerArgs};

#[derive(clap::Args, Debug)]
pub struct DatasetsArgs {
    /// Dataset(s) to load (repeatable); default: all of them.
    #[arg(long = "dataset", value_name = "NAME")]
    pub datasets: Vec<Dataset>,
    /// Also tokenize every prompt with these templates and report token-length statistics.
    #[arg(long = "template", value_name = "TEMPLATE")]
    pub templates: Vec<Template>,
    /// Write the summary as JSON here.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Write the loaded problems as JSONL here (one `Problem` per line; needs exactly one --dataset).
    #[arg(long, value_name = "FILE")]
    pub dump: Option<PathBuf>,
    #[command(flatten)]
    pub paths: DataPathArgs,
    #[command(flatten)]
    pub tokenizer: TokenizerArgs,
}

#[derive(serde::Serialize)]
struct LengthStats {
    min: usize,
    p50: usize,
    mean: f64,
    max: usize,
}

#[derive(serde::Serialize)]
struct DatasetSummary {
    dataset: Dataset,
    file: PathBuf,
    rows: usize,
    levels: BTreeMap<String, usize>,
    subjects: BTreeMap<String, usize>,
    prompt_tokens: BTreeMap<String, LengthStats>,
}

pub fn run_datasets(args: DatasetsArgs) -> anyhow::Result<()> {
    let roots = args.paths.roots();
    let datasets = if args.datasets.is_empty() { Dataset::ALL.to_vec() } else { args.datasets.clone() };
    if args.dump.is_some() && datasets.len() != 1 {
        bail!("--dump needs exactly one --dataset (got {})", datasets.len());
    }
    let tok = if args.templates.is_empty() { None } else { Some(args.tokenizer.load()?) };
    let mut summaries = Vec::new();
    println!("{:<18} {:>6}  {:<12} {:<28} file", "dataset", "rows", "levels 1-5", "prompt tokens min/p50/max");
    for ds in datasets {
        let problems = data::load(ds, &roots)?;
        let mut levels = BTreeMap::new();
        let mut subjects = BTreeMap::new();
        for p in &problems {
            *levels.entry(p.level.map_or("none".to_string(), |l| l.to_string())).or_insert(0) += 1;
            *subjects.entry(p.subject.clone().unwrap_or_else(|| "none".into())).or_insert(0) += 1;
        }
        let mut prompt_tokens = BTreeMap::new();
        if let Some(tok) = &tok {
            for t in &args.templates {
                let texts: Vec<String> = problems.iter().map(|p| t.render(&p.problem)).collect();
                let mut lens: Vec<usize> = tok.encode_batch(&texts)?.iter().map(Vec::len).collect();
                lens.sort_unstable();
                let mean = lens.iter().sum::<usize>() as f64 / lens.len().max(1) as f64;
                prompt_tokens.insert(
                    t.name().to_string(),
                    LengthStats { min: lens[0], p50: lens[lens.len() / 2], mean, max: lens[lens.len() - 1] },
                );
            }
        }
        let lv: Vec<String> = (1..=5).map(|l| levels.get(&l.to_string()).copied().unwrap_or(0).to_string()).collect();
        let pt = prompt_tokens
            .iter()
            .map(|(t, s)| format!("{t}:{}/{}/{}", s.min, s.p50, s.max))
            .collect::<Vec<_>>()
            .join(" ");
        let file = ds.file(&roots);
        println!("{:<18} {:>6}  {:<12} {:<28} {}", ds.name(), problems.len(), lv.join("/"), pt, file.display());
        if let Some(dump) = &args.dump {
            let mut out = String::new();
            for p in &problems {
                out.push_str(&serde_json::to_string(p)?);
                out.push('\n');
            }
            super::write_atomic(dump, out.trim_end().as_bytes())
                .with_context(|| format!("writing {}", dump.display()))?;
            eprintln!("wrote {} problems to {}", problems.len(), dump.display());
        }
        summaries.push(DatasetSummary { dataset: ds, file, rows: problems.len(), levels, subjects, prompt_tokens });
    }
    if let Some(out) = &args.out {
        super::write_json_atomic(out, &summaries)?;
        eprintln!("wrote summary to {}", out.display());
    }
    Ok(())
}

#[derive(clap::Args, Debug)]
pub struct PromptArgs {
    /// Dataset to take the problem from.
    #[arg(long, value_name = "NAME")]
    pub dataset: Dataset,
    /// Prompt template (the paper's): qwen2.5-math or qwen3 (non-thinking, empty think block).
    #[arg(long, value_name = "TEMPLATE", default_value = "qwen3")]
    pub template: Template,
    /// Row index of the problem in the dataset (0-based).
    #[arg(long, default_value_t = 0)]
    pub index: usize,
    /// Also print the token ids.
    #[arg(long)]
    pub ids: bool,
    #[command(flatten)]
    pub paths: DataPathArgs,
    #[command(flatten)]
    pub tokenizer: TokenizerArgs,
}

pub fn run_prompt(args: PromptArgs) -> anyhow::Result<()> {
    let problems = data::load(args.dataset, &args.paths.roots())?;
    let Some(p): Option<&Problem> = problems.get(args.index) else {
        bail!(
            "--index {} is out of range: {} has {} problems (0..{})",
            args.index,
            args.dataset,
            problems.len(),
            problems.len() - 1
        );
    };
    let tok = args.tokenizer.load()?;
    let text = args.template.render(&p.problem);
    let ids = tok.encode(&text)?;
    println!("{text}");
    println!("--- {} | template {} | gold answer: {} | {} tokens", p.id, args.template.name(), p.answer, ids.len());
    if args.ids {
        println!("{}", ids.iter().map(u32::to_string).collect::<Vec<_>>().join(","));
    }
    Ok(())
}
