//! The mini task's tokenizer: one token per character of `0-9 + = ; # $ }`, `\boxed{` as one
//! token, and the chat special tokens `<|endoftext|>` (padding), `<|im_start|>`, `<|im_end|>` (the
//! end of a response), so it loads through [`crate::prompt::QwenTokenizer`] (the `tokenizers`
//! crate) exactly like the Qwen tokenizer and every stage treats both the same way.

use serde_json::json;
use std::path::Path;

/// Special tokens first (their ids are fixed: 0, 1, 2), then `\boxed{`, `<unk>`, the characters.
pub const SPECIAL: [&str; 3] = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"];
pub const BOXED: &str = "\\boxed{";
pub const CHARS: &str = "0123456789+=;#$}";

/// The vocabulary in id order.
pub fn vocab() -> Vec<String> {
    let mut v: Vec<String> = SPECIAL.iter().map(|s| s.to_string()).collect();
    v.push(BOXED.into());
    v.push("<unk>".into());
    v.extend(CHARS.chars().map(|c| c.to_string()));
    v
}

/// `tokenizer.json` text (a WordLevel model over single characters, `\boxed{` and the specials as
/// added tokens, the Fuse decoder so decoding joins tokens without spaces).
pub fn tokenizer_json() -> String {
    let v = vocab();
    let added: Vec<serde_json::Value> = v[..4]
        .iter()
        .enumerate()
        .map(|(i, t)| {
            json!({"id": i, "content": t, "single_word": false, "lstrip": false, "rstrip": false,
                   "normalized": false, "special": i < 3})
        })
        .collect();
    let vocab: serde_json::Map<String, serde_json::Value> =
        v.iter().enumerate().map(|(i, t)| (t.clone(), json!(i))).collect();
    let tok = json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": null,
        "pre_tokenizer": {"type": "Split", "pattern": {"Regex": "."}, "behavior": "Isolated", "invert": false},
        "post_processor": null,
        "decoder": {"type": "Fuse"},
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "<unk>"}
    });
    serde_json::to_string_pretty(&tok).expect("serializable") + "\n"
}

/// Writes `tokenizer.json` into `dir` durably.
pub fn write(dir: &Path) -> std::io::Result<()> {
    crate::durable::write(&dir.join("tokenizer.json"), tokenizer_json().as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prompt::QwenTokenizer;

    #[test]
    fn loads_as_a_qwen_style_tokenizer_and_round_trips() {
        let t = tempfile::tempdir().unwrap();
        write(t.path()).unwrap();
        let tok = QwenTokenizer::from_file(&t.path().join("tokenizer.json")).unwrap();
        assert_eq!((tok.endoftext, tok.im_start, tok.im_end), (0, 1, 2));
        assert_eq!(tok.vocab_size(), vocab().len());
        let ids = tok.encode("347+258=").unwrap();
        assert_eq!(ids.len(), 8);
        let r = tok.encode("#\\boxed{605}<|im_end|>").unwrap();
        assert_eq!(r.len(), 7, "{r:?}");
        assert_eq!(r[1], 3);
        assert_eq!(*r.last().unwrap(), 2);
        assert_eq!(tok.decode(&r, true).unwrap(), "#\\boxed{605}");
        let slow = "7+8+0=15;4+5+1=10;3+2+1=6;\\boxed{605}";
        assert_eq!(tok.decode(&tok.encode(slow).unwrap(), true).unwrap(), slow);
    }
}
