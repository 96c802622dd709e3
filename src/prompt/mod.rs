//! The paper's prompt templates and the Qwen tokenizer.
//!
//! Templates (PAPER.md §2.2; the paper repo's `verl/utils/dataset/rl_dataset.py`):
//! - `qwen2.5-math` (Qwen2.5-Math-7B, from SimpleRL-Zoo):
//!   `<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n{input}\nPlease reason step by step, and put your final answer within \boxed{}.<|im_end|>\n<|im_start|>assistant\n`
//! - `qwen3` (Qwen3-4B non-thinking): the same, followed by `<think>\n\n</think>\n` (empty think block).
//! - `smollm2` (SmolLM2-Instruct, `make reproduce PROFILE=smollm2`): its chat template's default
//!   system prompt, then the paper's instruction as above:
//!   `<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\n{input}\nPlease reason step by step, and put your final answer within \boxed{}.<|im_end|>\n<|im_start|>assistant\n`
//! - `plain`: the problem text as it is (the embedded mini task).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// A chat template from the paper.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Template {
    /// Qwen2.5-Math-7B's template (system prompt + step-by-step + `\boxed{}` instruction).
    #[value(name = "qwen2.5-math")]
    #[serde(rename = "qwen2.5-math")]
    Qwen25Math,
    /// Qwen3-4B non-thinking: `qwen2.5-math` followed by an empty `<think>` block.
    #[value(name = "qwen3")]
    Qwen3,
    /// SmolLM2-Instruct's chat template (its default system prompt) with the paper's instruction.
    #[value(name = "smollm2")]
    #[serde(rename = "smollm2")]
    Smollm2,
    /// The problem text as it is (the mini task's `a+b=` prompts).
    #[value(name = "plain")]
    Plain,
}

const SYSTEM: &str = "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n";
const INSTRUCTION: &str =
    "\nPlease reason step by step, and put your final answer within \\boxed{}.<|im_end|>\n<|im_start|>assistant\n";
const EMPTY_THINK: &str = "<think>\n\n</think>\n";
const SMOLLM2_SYSTEM: &str = "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\n";

impl Template {
    /// Render the prompt for one problem statement.
    pub fn render(self, problem: &str) -> String {
        if self == Template::Plain {
            return problem.to_string();
        }
        let system = if self == Template::Smollm2 { SMOLLM2_SYSTEM } else { SYSTEM };
        let mut s = String::with_capacity(system.len() + problem.len() + INSTRUCTION.len() + EMPTY_THINK.len());
        s.push_str(system);
        s.push_str(problem);
        s.push_str(INSTRUCTION);
        if self == Template::Qwen3 {
            s.push_str(EMPTY_THINK);
        }
        s
    }

    pub fn name(self) -> &'static str {
        match self {
            Template::Qwen25Math => "qwen2.5-math",
            Template::Qwen3 => "qwen3",
            Template::Smollm2 => "smollm2",
            Template::Plain => "plain",
        }
    }
}

/// Why the tokenizer could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    #[error("tokenizer file {0} not found (run `make setup`, or pass --tokenizer / set RLVR_TOKENIZER)")]
    Missing(PathBuf),
    #[error("cannot load tokenizer {path}: {msg}")]
    Load { path: PathBuf, msg: String },
    #[error("tokenizer {path} has no token {token:?}")]
    NoSuchToken { path: PathBuf, token: String },
    #[error("tokenization failed: {0}")]
    Encode(String),
}

/// The Qwen byte-level BPE tokenizer (`tokenizer.json`) with the chat special tokens resolved.
pub struct QwenTokenizer {
    inner: tokenizers::Tokenizer,
    /// `<|im_start|>` (151644 for Qwen2.5/Qwen3).
    pub im_start: u32,
    /// `<|im_end|>` (151645): end of an assistant turn, the sampling stop token.
    pub im_end: u32,
    /// `<|endoftext|>` (151643): padding / document end.
    pub endoftext: u32,
}

impl QwenTokenizer {
    pub fn from_file(path: &Path) -> Result<Self, TokenizerError> {
        if !path.is_file() {
            return Err(TokenizerError::Missing(path.to_path_buf()));
        }
        let inner = tokenizers::Tokenizer::from_file(path)
            .map_err(|e| TokenizerError::Load { path: path.to_path_buf(), msg: e.to_string() })?;
        let id = |t: &str| {
            inner
                .token_to_id(t)
                .ok_or_else(|| TokenizerError::NoSuchToken { path: path.to_path_buf(), token: t.to_string() })
        };
        Ok(QwenTokenizer {
            im_start: id("<|im_start|>")?,
            im_end: id("<|im_end|>")?,
            endoftext: id("<|endoftext|>")?,
            inner,
        })
    }

    /// Encode text with special tokens (`<|im_start|>` …) recognised, no BOS/EOS added.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, TokenizerError> {
        let enc = self.inner.encode(text, false).map_err(|e| TokenizerError::Encode(e.to_string()))?;
        Ok(enc.get_ids().to_vec())
    }

    /// Encode many texts in parallel (rayon, inside `tokenizers`).
    pub fn encode_batch(&self, texts: &[String]) -> Result<Vec<Vec<u32>>, TokenizerError> {
        let encs = self
            .inner
            .encode_batch(texts.iter().map(|s| s.as_str()).collect::<Vec<_>>(), false)
            .map_err(|e| TokenizerError::Encode(e.to_string()))?;
        Ok(encs.into_iter().map(|e| e.get_ids().to_vec()).collect())
    }

    /// Decode ids back to text; `skip_special` drops `<|im_end|>` and friends.
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String, TokenizerError> {
        self.inner.decode(ids, skip_special).map_err(|e| TokenizerError::Encode(e.to_string()))
    }

    /// Vocabulary size including added tokens.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }
}
