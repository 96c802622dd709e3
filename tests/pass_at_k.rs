//! The unbiased pass@k estimator: human-eval's value bit for bit, and exact agreement with
//! C(n−c,k)/C(n,k) computed with big integers for every n ≤ 256.

use std::collections::BTreeMap;

use num_bigint::BigUint;
use num_traits::{One, ToPrimitive, Zero};
use rlvr_decomp::eval::pass_at_k::{self, parse_k_list, pass_at_k, powers_of_two_up_to, Counts};

#[test]
fn human_eval_example_bit_for_bit() {
    // human-eval's data/example_samples.jsonl: n = 6, c = 3 → `0.4999999999999999`.
    assert_eq!(pass_at_k(6, 3, 1), Some(0.4999999999999999));
    assert_eq!(pass_at_k(6, 3, 1).unwrap().to_string(), "0.4999999999999999");
}

#[test]
fn undefined_and_edge_cases() {
    assert_eq!(pass_at_k(3, 3, 4), None); // k > n
    assert_eq!(pass_at_k(3, 1, 0), None); // k = 0
    assert_eq!(pass_at_k(3, 4, 1), None); // c > n
    assert_eq!(pass_at_k(256, 0, 256), Some(0.0));
    assert_eq!(pass_at_k(256, 1, 256), Some(1.0));
    assert_eq!(pass_at_k(10, 10, 1), Some(1.0));
    assert_eq!(pass_at_k(1, 0, 1), Some(0.0));
}

/// Pascal's triangle up to `n` in big integers.
fn binomials(n: usize) -> Vec<Vec<BigUint>> {
    let mut rows: Vec<Vec<BigUint>> = vec![vec![BigUint::one()]];
    for m in 1..=n {
        let prev = &rows[m - 1];
        let mut row = vec![BigUint::one(); m + 1];
        for k in 1..m {
            row[k] = &prev[k - 1] + &prev[k];
        }
        rows.push(row);
    }
    rows
}

#[test]
fn matches_exact_binomial_ratio_for_all_n_up_to_256() {
    let c = binomials(256);
    let mut checked = 0u64;
    let mut worst = 0.0f64;
    for n in 1..=256usize {
        for correct in 0..=n {
            for k in 1..=n {
                let m = n - correct;
                let num = if k <= m { c[m][k].clone() } else { BigUint::zero() };
                // 1 − C(n−c,k)/C(n,k), as the ratio of two exact integers (both < 2^1024).
                let exact = 1.0 - num.to_f64().unwrap() / c[n][k].to_f64().unwrap();
                let ours = pass_at_k(n as u64, correct as u64, k as u64).unwrap();
                let err = (ours - exact).abs();
                worst = worst.max(err);
                assert!(err <= 1e-12, "n={n} c={correct} k={k}: ours {ours} exact {exact}");
                checked += 1;
            }
        }
    }
    assert_eq!(checked, (1..=256u64).map(|n| n * (n + 1)).sum::<u64>());
    assert!(worst < 1e-12);
}

#[test]
fn k_grid_and_parsing() {
    assert_eq!(powers_of_two_up_to(256), vec![1, 2, 4, 8, 16, 32, 64, 128, 256]);
    assert_eq!(powers_of_two_up_to(64).last(), Some(&64));
    assert_eq!(powers_of_two_up_to(100).last(), Some(&64));
    assert_eq!(parse_k_list("4, 1,2,2").unwrap(), vec![1, 2, 4]);
    for bad in ["", "0", "1,,2", "x", "-1", "1.5"] {
        let msg = parse_k_list(bad).unwrap_err().to_string();
        assert!(msg.contains("k must be a positive integer"), "{bad:?}: {msg}");
    }
}

#[test]
fn dataset_report_means_and_k_over_n() {
    let mut counts = BTreeMap::new();
    counts.insert("a".to_string(), Counts { n: 4, c: 2 });
    counts.insert("b".to_string(), Counts { n: 4, c: 0 });
    let r = pass_at_k::report(&counts, &[1, 2, 4]).unwrap();
    assert_eq!(r.n_problems, 2);
    // a: pass@1 = 0.5, pass@2 = 1 − C(2,2)/C(4,2) = 5/6, pass@4 = 1; b: all 0.
    assert!((r.pass_at_k[&1] - 0.25).abs() < 1e-15);
    assert!((r.pass_at_k[&2] - 5.0 / 12.0).abs() < 1e-15);
    assert!((r.pass_at_k[&4] - 0.5).abs() < 1e-15);
    let keys: Vec<u64> = r.pass_at_k.keys().copied().collect();
    assert_eq!(keys, [1, 2, 4]);
    let msg = pass_at_k::report(&counts, &[8]).unwrap_err().to_string();
    assert!(msg.contains("pass@8") && msg.contains("n=4"), "{msg}");
}
