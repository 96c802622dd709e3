//! Prompt templates and the real Qwen tokenizer (fetched and sha256-checked by `make setup`).

use rlvr_decomp::prompt::{QwenTokenizer, Template};

fn tok() -> QwenTokenizer {
    let path = rlvr_decomp::paths::tokenizer_path(None);
    QwenTokenizer::from_file(&path).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn known_token_ids() {
    let t = tok();
    assert_eq!(t.encode("Hello world!").unwrap(), vec![9707, 1879, 0]);
    assert_eq!(t.im_start, 151644);
    assert_eq!(t.im_end, 151645);
    assert_eq!(t.endoftext, 151643);
    assert_eq!(t.encode("<|im_start|>user").unwrap(), vec![151644, 872]);
    assert_eq!(t.vocab_size(), 151_669);
}

#[test]
fn templates_match_the_paper() {
    let q25 = Template::Qwen25Math.render("What is $1+1$?");
    assert_eq!(
        q25,
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nWhat is $1+1$?\n\
         Please reason step by step, and put your final answer within \\boxed{}.<|im_end|>\n<|im_start|>assistant\n"
    );
    let q3 = Template::Qwen3.render("What is $1+1$?");
    assert_eq!(q3, format!("{q25}<think>\n\n</think>\n"));
}

#[test]
fn rendered_prompt_tokenizes_with_special_tokens() {
    let t = tok();
    let ids = t.encode(&Template::Qwen3.render("What is $1+1$?")).unwrap();
    assert_eq!(ids[0], t.im_start);
    assert_eq!(ids.iter().filter(|&&i| i == t.im_start).count(), 3);
    assert_eq!(ids.iter().filter(|&&i| i == t.im_end).count(), 2);
    // <think> = 151667, </think> = 151668, "\n\n" = 271, "\n" = 198.
    assert_eq!(&ids[ids.len() - 4..], &[151667, 271, 151668, 198]);
    assert_eq!(t.decode(&ids, false).unwrap(), Template::Qwen3.render("What is $1+1$?"));
}

#[test]
fn missing_tokenizer_is_a_clear_error() {
    let err = QwenTokenizer::from_file(std::path::Path::new("/nonexistent/tokenizer.json")).err().unwrap();
    let msg = err.to_string();
    assert!(msg.contains("/nonexistent/tokenizer.json") && msg.contains("make setup"), "{msg}");
}
