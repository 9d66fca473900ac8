//! Evaluation on labelled data: JSONL lines `{"text", "intent"}`, with `oos` for messages
//! outside every intent.
//!
//! Definitions (the cascade without an LLM: the local model answers alone when its confidence
//! reaches the threshold; everything else goes on, here to the fallback, which is counted as
//! an out-of-scope decision):
//! - `in_scope_accuracy`: on in-scope messages, the model's best intent is right (no
//!   threshold: the classic CLINC150 in-scope accuracy).
//! - `local_coverage`: the share of in-scope messages the local stage answers alone.
//! - `local_precision`: of every message the local stage answers alone (in scope or not),
//!   the share answered with the right intent.
//! - `oos_precision` / `oos_recall`: of the messages not answered, the share truly out of
//!   scope; of the out-of-scope messages, the share not answered.
//! - `macro_f1`: F1 of the final decision (an intent or `oos`) averaged over every label.
//! - `stage_share`: the share of all messages each stage decided.
//! - `p50_us` / `p99_us`: time of one local prediction.

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use serde::Serialize;

use crate::model::{Example, Model};

/// The label of out-of-scope messages.
pub const OUT_OF_SCOPE: &str = "oos";

/// Reads JSONL `{"text", "intent"}` lines.
///
/// # Errors
/// Names the line that is not such an object.
pub fn read_jsonl(text: &str) -> Result<Vec<Example>, String> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| serde_json::from_str(l).map_err(|e| format!("line {}: {e}", i + 1)))
        .collect()
}

/// The results of one evaluation.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Messages evaluated.
    pub messages: usize,
    /// In-scope messages among them.
    pub in_scope: usize,
    /// The confidence threshold of the local stage.
    pub threshold: f32,
    /// See the module docs.
    pub in_scope_accuracy: f64,
    /// See the module docs.
    pub macro_f1: f64,
    /// See the module docs.
    pub oos_precision: f64,
    /// See the module docs.
    pub oos_recall: f64,
    /// See the module docs.
    pub local_precision: f64,
    /// See the module docs.
    pub local_coverage: f64,
    /// See the module docs.
    pub stage_share: BTreeMap<String, f64>,
    /// Median prediction time in microseconds.
    pub p50_us: f64,
    /// 99th percentile prediction time in microseconds.
    pub p99_us: f64,
    /// LLM calls made.
    pub llm_calls: usize,
}

fn ratio(a: usize, b: usize) -> f64 {
    if b == 0 { 0.0 } else { a as f64 / b as f64 }
}

/// What the cascade decided for one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// The intent chosen, or [`OUT_OF_SCOPE`].
    pub intent: String,
    /// `local`, `llm` or `fallback` (nobody was sure).
    pub stage: &'static str,
}

/// The local stage's answers on `data` at `threshold`, with the prediction times in µs and
/// the local model's best guess (answered or not) for the in-scope accuracy.
#[derive(Debug, Clone)]
pub struct LocalRun {
    /// One decision per message.
    pub decisions: Vec<Decision>,
    /// The local model's best intent per message, whatever its confidence.
    pub best: Vec<String>,
    /// Prediction times in microseconds.
    pub times_us: Vec<f64>,
}

/// Runs the local stage over `data`: it answers alone at `threshold` or above; below, the
/// message is left to the next stage (`fallback` until one answers).
pub fn run_local(model: &Model, data: &[Example], threshold: f32) -> LocalRun {
    let mut run = LocalRun {
        decisions: Vec::with_capacity(data.len()),
        best: Vec::with_capacity(data.len()),
        times_us: Vec::with_capacity(data.len()),
    };
    for example in data {
        let started = Instant::now();
        let prediction = model.predict(&example.text);
        run.times_us.push(started.elapsed().as_secs_f64() * 1e6);
        let answers = prediction.confidence >= threshold && !prediction.unknown_words_only;
        run.decisions.push(if answers {
            Decision {
                intent: prediction.intent.clone(),
                stage: "local",
            }
        } else {
            Decision {
                intent: OUT_OF_SCOPE.to_owned(),
                stage: "fallback",
            }
        });
        run.best.push(prediction.intent);
    }
    run
}

/// Evaluates `model` on `data` with the local stage answering at `threshold`.
pub fn evaluate(model: &Model, data: &[Example], threshold: f32) -> Report {
    let run = run_local(model, data, threshold);
    report(data, &run, threshold, 0)
}

/// Builds the report of a cascade run: `run.decisions` may have been completed by the LLM
/// stage (`llm_calls` calls).
pub fn report(data: &[Example], run: &LocalRun, threshold: f32, llm_calls: usize) -> Report {
    let mut times = run.times_us.clone();
    let decisions: Vec<String> = run.decisions.iter().map(|d| d.intent.clone()).collect();
    let (mut in_scope, mut top_right, mut answered, mut answered_right, mut answered_in_scope) =
        (0, 0, 0, 0, 0);
    let mut by_stage: BTreeMap<String, usize> = ["local", "llm", "fallback"]
        .iter()
        .map(|s| ((*s).to_owned(), 0))
        .collect();
    for ((example, decision), best) in data.iter().zip(&run.decisions).zip(&run.best) {
        *by_stage.entry(decision.stage.to_owned()).or_default() += 1;
        let gold_in_scope = example.intent != OUT_OF_SCOPE;
        if gold_in_scope {
            in_scope += 1;
            // The cascade's answer when a stage answered, else the local model's best guess.
            let chosen = if decision.stage == "fallback" {
                best
            } else {
                &decision.intent
            };
            top_right += usize::from(*chosen == example.intent);
        }
        if decision.stage == "local" {
            answered += 1;
            answered_right += usize::from(decision.intent == example.intent);
            answered_in_scope += usize::from(gold_in_scope);
        }
    }
    // Per-label counts for precision, recall and F1 of the final decision.
    let mut counts: HashMap<&str, (usize, usize, usize)> = HashMap::new(); // (tp, fp, fn)
    for (example, decided) in data.iter().zip(&decisions) {
        if *decided == example.intent {
            counts.entry(decided).or_default().0 += 1;
        } else {
            counts.entry(decided).or_default().1 += 1;
            counts.entry(&example.intent).or_default().2 += 1;
        }
    }
    let f1s: Vec<f64> = counts
        .values()
        .map(|&(tp, fp, fn_)| {
            let (p, r) = (ratio(tp, tp + fp), ratio(tp, tp + fn_));
            if p + r == 0.0 {
                0.0
            } else {
                2.0 * p * r / (p + r)
            }
        })
        .collect();
    let (oos_tp, oos_fp, oos_fn) = counts.get(OUT_OF_SCOPE).copied().unwrap_or_default();
    times.sort_by(f64::total_cmp);
    let percentile = |p: f64| {
        times
            .get(((times.len() as f64 - 1.0) * p).round() as usize)
            .copied()
            .unwrap_or(0.0)
    };
    let total = data.len();
    Report {
        messages: total,
        in_scope,
        threshold,
        in_scope_accuracy: ratio(top_right, in_scope),
        macro_f1: if f1s.is_empty() {
            0.0
        } else {
            f1s.iter().sum::<f64>() / f1s.len() as f64
        },
        oos_precision: ratio(oos_tp, oos_tp + oos_fp),
        oos_recall: ratio(oos_tp, oos_tp + oos_fn),
        local_precision: ratio(answered_right, answered),
        local_coverage: ratio(answered_in_scope, in_scope),
        stage_share: by_stage
            .into_iter()
            .map(|(stage, n)| (stage, ratio(n, total)))
            .collect(),
        p50_us: percentile(0.5),
        p99_us: percentile(0.99),
        llm_calls,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TrainOptions;

    fn ex(text: &str, intent: &str) -> Example {
        Example::new(text, intent)
    }

    #[test]
    fn metrics_follow_their_definitions() {
        let train = vec![
            ex("where is my order", "status"),
            ex("track my order", "status"),
            ex("order status please", "status"),
            ex("opening hours", "hours"),
            ex("when are you open", "hours"),
            ex("are you open today", "hours"),
        ];
        let model = Model::train(&train, TrainOptions::default()).unwrap();
        let data = vec![
            ex("track my order", "status"),
            ex("when are you open", "hours"),
            ex("zzzz", OUT_OF_SCOPE),
        ];
        // Threshold 0: the two in-scope messages are answered; "zzzz" has no known feature.
        let report = evaluate(&model, &data, 0.0);
        assert_eq!((report.messages, report.in_scope), (3, 2));
        assert_eq!(report.in_scope_accuracy, 1.0);
        assert_eq!(report.local_coverage, 1.0);
        assert_eq!(report.local_precision, 1.0);
        assert_eq!((report.oos_precision, report.oos_recall), (1.0, 1.0));
        assert_eq!(report.macro_f1, 1.0);
        assert!((report.stage_share["local"] - 2.0 / 3.0).abs() < 1e-9);
        // Threshold above any confidence: nothing answered, every in-scope message is a miss.
        let report = evaluate(&model, &data, 1.1);
        assert_eq!(report.local_coverage, 0.0);
        assert_eq!(
            report.in_scope_accuracy, 1.0,
            "the best flow is still right"
        );
        assert!((report.oos_precision - 1.0 / 3.0).abs() < 1e-9);
        assert_eq!(report.stage_share["fallback"], 1.0);
        assert!(
            read_jsonl("{\"text\": 1}")
                .unwrap_err()
                .starts_with("line 1")
        );
    }
}
