//! Evaluation on labelled data: JSONL lines `{"text", "intent"}`, with `oos` for messages
//! outside every intent.
//!
//! Definitions (the cascade without an LLM: the local model answers alone when its confidence
//! reaches the threshold; everything else goes on, here to the fallback, which is counted as
//! an out-of-scope decision):
//! - `in_scope_accuracy`: on in-scope messages, the local stages' best intent is right (no
//!   threshold: the classic CLINC150 in-scope accuracy); with the semantic stage, the fused
//!   best intent of the messages the lexical model did not answer alone.
//! - `cascade_accuracy`: on in-scope messages, the intent the customer actually got is right:
//!   a stage answered with it (a message left to the fallback counts as wrong).
//! - `local_coverage`: the share of in-scope messages the local stages answer (the lexical
//!   model alone, and the semantic stage when it is on), without the LLM.
//! - `local_precision`: of every message the local stages answer (in scope or not), the
//!   share answered with the right intent.
//! - `oos_precision` / `oos_recall`: of the messages not answered, the share truly out of
//!   scope; of the out-of-scope messages, the share not answered.
//! - `macro_f1`: F1 of the final decision (an intent or `oos`) averaged over every label.
//! - `stage_share`: the share of all messages each stage decided; `stage_precision`: of the
//!   messages a stage decided, the share decided right (for `fallback`: truly out of scope).
//! - `p50_us` / `p99_us`: time of one local prediction.
//! - `by_language`: when the data gives each message's `language`, the same figures for each
//!   language's messages apart (in-scope and cascade accuracy, coverage, out-of-scope recall).
//! - `labels`: precision, recall and F1 of the final decision per label, hardest first;
//!   `confusions`: the most frequent (expected, decided) pairs that differ, with an example.
//! - [`sweep`]: coverage, precision and out-of-scope recall of the local stage at several
//!   thresholds, from one run, to choose `classifier_threshold`.

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use serde::Serialize;

use crate::model::{Example, Model};

/// The label of out-of-scope messages.
pub const OUT_OF_SCOPE: &str = "oos";

/// Reads JSONL `{"text", "intent"}` lines (`"language"` optional).
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
    pub cascade_accuracy: f64,
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
    /// See the module docs.
    pub stage_precision: BTreeMap<String, f64>,
    /// Median prediction time in microseconds.
    pub p50_us: f64,
    /// 99th percentile prediction time in microseconds.
    pub p99_us: f64,
    /// LLM calls made.
    pub llm_calls: usize,
    /// Every label's scores, lowest F1 first.
    pub labels: Vec<LabelScore>,
    /// The most frequent wrong decisions, most frequent first (at most [`MAX_CONFUSIONS`]).
    pub confusions: Vec<Confusion>,
    /// Each language's figures, when the data names languages.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub by_language: BTreeMap<String, LanguageScore>,
}

/// The figures of one language's messages (see the module docs).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LanguageScore {
    /// Messages in the language.
    pub messages: usize,
    /// In-scope messages among them.
    pub in_scope: usize,
    /// See the module docs.
    pub in_scope_accuracy: f64,
    /// See the module docs.
    pub cascade_accuracy: f64,
    /// See the module docs.
    pub local_coverage: f64,
    /// See the module docs.
    pub oos_recall: f64,
}

/// How many confusions a report lists.
pub const MAX_CONFUSIONS: usize = 20;

/// How well the final decision does on one label (an intent or [`OUT_OF_SCOPE`]).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LabelScore {
    /// The intent, or [`OUT_OF_SCOPE`].
    pub label: String,
    /// Messages labelled with it.
    pub support: usize,
    /// Of the messages decided as it, the share labelled with it.
    pub precision: f64,
    /// Of the messages labelled with it, the share decided as it.
    pub recall: f64,
    /// Harmonic mean of precision and recall.
    pub f1: f64,
}

/// Messages labelled `expected` and decided as `decided`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Confusion {
    /// The right label.
    pub expected: String,
    /// The label decided instead.
    pub decided: String,
    /// How many messages.
    pub count: usize,
    /// The first such message.
    pub example: String,
}

/// The local stage's trade-off at one threshold (see [`sweep`]).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ThresholdPoint {
    /// The confidence threshold (to three decimals, so JSON shows 0.8 rather than 0.800000011).
    pub threshold: f64,
    /// Share of in-scope messages the local stage answers alone.
    pub local_coverage: f64,
    /// Share of its answers that are right (out-of-scope messages included).
    pub local_precision: f64,
    /// Share of out-of-scope messages it leaves unanswered.
    pub oos_recall: f64,
}

/// The `p` quantile (0 to 1) of `sorted` values, nearest rank; 0 when there are none.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted
        .get(((sorted.len() as f64 - 1.0) * p).round() as usize)
        .copied()
        .unwrap_or(0.0)
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
    /// The best intent's confidence per message; `None` when the message shares no feature
    /// with any example (never answered).
    pub confidence: Vec<Option<f32>>,
}

/// Runs the local stage over `data`: it answers alone at `threshold` or above; below, the
/// message is left to the next stage (`fallback` until one answers).
pub fn run_local(model: &Model, data: &[Example], threshold: f32) -> LocalRun {
    let mut run = LocalRun {
        decisions: Vec::with_capacity(data.len()),
        best: Vec::with_capacity(data.len()),
        times_us: Vec::with_capacity(data.len()),
        confidence: Vec::with_capacity(data.len()),
    };
    for example in data {
        let started = Instant::now();
        let prediction = model.predict(&example.text);
        run.times_us.push(started.elapsed().as_secs_f64() * 1e6);
        let confidence = (!prediction.unknown_words_only).then_some(prediction.confidence);
        run.decisions
            .push(local_decision(&prediction.intent, confidence, threshold));
        run.confidence.push(confidence);
        run.best.push(prediction.intent);
    }
    run
}

/// The local stage's decision: `best` when its confidence reaches `threshold`, else the
/// message is left to the next stage (`fallback` until one answers).
fn local_decision(best: &str, confidence: Option<f32>, threshold: f32) -> Decision {
    if confidence.is_some_and(|c| c >= threshold) {
        Decision {
            intent: best.to_owned(),
            stage: "local",
        }
    } else {
        Decision {
            intent: OUT_OF_SCOPE.to_owned(),
            stage: "fallback",
        }
    }
}

/// Evaluates `model` on `data` with the local stage answering at `threshold`.
pub fn evaluate(model: &Model, data: &[Example], threshold: f32) -> Report {
    let run = run_local(model, data, threshold);
    report(data, &run, threshold, 0)
}

/// Builds the report of a cascade run: `run.decisions` may have been completed by the LLM
/// stage (`llm_calls` calls).
pub fn report(data: &[Example], run: &LocalRun, threshold: f32, llm_calls: usize) -> Report {
    let mut overall = report_of(data, run, threshold, llm_calls);
    let mut languages: Vec<&str> = data.iter().filter_map(|e| e.language.as_deref()).collect();
    languages.sort_unstable();
    languages.dedup();
    for language in languages {
        let picked: Vec<usize> = (0..data.len())
            .filter(|&i| data[i].language.as_deref() == Some(language))
            .collect();
        let sub_data: Vec<Example> = picked.iter().map(|&i| data[i].clone()).collect();
        let sub_run = LocalRun {
            decisions: picked.iter().map(|&i| run.decisions[i].clone()).collect(),
            best: picked.iter().map(|&i| run.best[i].clone()).collect(),
            times_us: picked.iter().map(|&i| run.times_us[i]).collect(),
            confidence: picked.iter().map(|&i| run.confidence[i]).collect(),
        };
        let r = report_of(&sub_data, &sub_run, threshold, 0);
        overall.by_language.insert(
            language.to_owned(),
            LanguageScore {
                messages: r.messages,
                in_scope: r.in_scope,
                in_scope_accuracy: r.in_scope_accuracy,
                cascade_accuracy: r.cascade_accuracy,
                local_coverage: r.local_coverage,
                oos_recall: r.oos_recall,
            },
        );
    }
    overall
}

/// The report of `data` as one set (no per-language split).
fn report_of(data: &[Example], run: &LocalRun, threshold: f32, llm_calls: usize) -> Report {
    let mut times = run.times_us.clone();
    let decisions: Vec<String> = run.decisions.iter().map(|d| d.intent.clone()).collect();
    let (mut in_scope, mut top_right, mut answered, mut answered_right, mut answered_in_scope) =
        (0, 0, 0, 0, 0);
    let mut cascade_right = 0;
    let mut by_stage: BTreeMap<String, usize> = ["local", "llm", "fallback"]
        .iter()
        .map(|s| ((*s).to_owned(), 0))
        .collect();
    let mut right_by_stage: BTreeMap<String, usize> = BTreeMap::new();
    for ((example, decision), best) in data.iter().zip(&run.decisions).zip(&run.best) {
        *by_stage.entry(decision.stage.to_owned()).or_default() += 1;
        let gold_in_scope = example.intent != OUT_OF_SCOPE;
        let right = if decision.stage == "fallback" {
            !gold_in_scope
        } else {
            decision.intent == example.intent
        };
        *right_by_stage.entry(decision.stage.to_owned()).or_default() += usize::from(right);
        if gold_in_scope {
            cascade_right += usize::from(decision.stage != "fallback" && right);
            in_scope += 1;
            // The cascade's answer when a stage answered, else the local model's best guess.
            let chosen = if decision.stage == "fallback" {
                best
            } else {
                &decision.intent
            };
            top_right += usize::from(*chosen == example.intent);
        }
        if decision.stage == "local" || decision.stage == "semantic" {
            answered += 1;
            answered_right += usize::from(decision.intent == example.intent);
            answered_in_scope += usize::from(gold_in_scope);
        }
    }
    // Per-label counts for precision, recall and F1 of the final decision.
    let mut counts: HashMap<&str, (usize, usize, usize)> = HashMap::new(); // (tp, fp, fn)
    let mut confused: HashMap<(&str, &str), (usize, &str)> = HashMap::new();
    for (example, decided) in data.iter().zip(&decisions) {
        if *decided == example.intent {
            counts.entry(decided).or_default().0 += 1;
        } else {
            counts.entry(decided).or_default().1 += 1;
            counts.entry(&example.intent).or_default().2 += 1;
            confused
                .entry((&example.intent, decided))
                .or_insert((0, &example.text))
                .0 += 1;
        }
    }
    let mut labels: Vec<LabelScore> = counts
        .iter()
        .map(|(label, &(tp, fp, fn_))| {
            let (precision, recall) = (ratio(tp, tp + fp), ratio(tp, tp + fn_));
            let f1 = if precision + recall == 0.0 {
                0.0
            } else {
                2.0 * precision * recall / (precision + recall)
            };
            LabelScore {
                label: (*label).to_owned(),
                support: tp + fn_,
                precision,
                recall,
                f1,
            }
        })
        .collect();
    labels.sort_by(|a, b| a.f1.total_cmp(&b.f1).then_with(|| a.label.cmp(&b.label)));
    let mut confusions: Vec<Confusion> = confused
        .into_iter()
        .map(|((expected, decided), (count, example))| Confusion {
            expected: expected.to_owned(),
            decided: decided.to_owned(),
            count,
            example: example.to_owned(),
        })
        .collect();
    confusions.sort_by(|a, b| {
        b.count
            .cmp(&a.count)
            .then_with(|| (&a.expected, &a.decided).cmp(&(&b.expected, &b.decided)))
    });
    confusions.truncate(MAX_CONFUSIONS);
    let (oos_tp, oos_fp, oos_fn) = counts.get(OUT_OF_SCOPE).copied().unwrap_or_default();
    times.sort_by(f64::total_cmp);
    let percentile = |p: f64| percentile(&times, p);
    let total = data.len();
    Report {
        messages: total,
        in_scope,
        threshold,
        in_scope_accuracy: ratio(top_right, in_scope),
        cascade_accuracy: ratio(cascade_right, in_scope),
        macro_f1: if labels.is_empty() {
            0.0
        } else {
            labels.iter().map(|l| l.f1).sum::<f64>() / labels.len() as f64
        },
        oos_precision: ratio(oos_tp, oos_tp + oos_fp),
        oos_recall: ratio(oos_tp, oos_tp + oos_fn),
        local_precision: ratio(answered_right, answered),
        local_coverage: ratio(answered_in_scope, in_scope),
        stage_precision: by_stage
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(stage, n)| {
                let right = right_by_stage.get(stage).copied().unwrap_or(0);
                (stage.clone(), ratio(right, *n))
            })
            .collect(),
        stage_share: by_stage
            .into_iter()
            .map(|(stage, n)| (stage, ratio(n, total)))
            .collect(),
        p50_us: percentile(0.5),
        p99_us: percentile(0.99),
        llm_calls,
        labels,
        confusions,
        by_language: BTreeMap::new(),
    }
}

/// The semantic stage's part of an evaluation (`tandem eval --embedder`).
#[derive(Debug, Clone, Serialize)]
pub struct SemanticReport {
    /// The embedding model.
    pub model: String,
    /// The fused score at which the stage answers.
    pub threshold: f32,
    /// The lexical model's confidence at which it answers alone while the stage is on.
    pub lexical_threshold: f32,
    /// Training examples embedded.
    pub examples: usize,
    /// Time to embed the training examples (in batches, as at start-up without a cache).
    pub embed_examples_ms: f64,
    /// Time to train the head.
    pub train_ms: f64,
    /// Median time to embed one message (one request, as the server asks).
    pub embed_p50_ms: f64,
    /// 99th percentile time to embed one message.
    pub embed_p99_ms: f64,
    /// Messages the embedder failed on (left to the next stage).
    pub failures: usize,
    /// Share of all messages the semantic stage answered.
    pub share: f64,
    /// Of the messages it answered, the share right.
    pub precision: f64,
    /// Share of all messages no local stage answered: what the LLM (or the fallback) gets.
    pub left_for_llm: f64,
    /// The local stages' coverage, precision and out-of-scope recall at other semantic
    /// thresholds (the lexical model's part unchanged).
    pub sweep: Vec<ThresholdPoint>,
}

/// The semantic stage's thresholds `tandem eval --embedder` sweeps.
pub const SEMANTIC_SWEEP: [f32; 7] = [0.4, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9];

/// Re-decides `run` with the semantic stage on: the lexical model answers alone at
/// `max(threshold, lexical_threshold)`; below, the stage decides from each message's vector
/// (`None`: the embedder failed, the message goes on). `run.best` becomes the fused best
/// intent of those messages. Returns the stage's answer per message (for [`semantic_sweep`]).
pub fn run_semantic(
    run: &mut LocalRun,
    model: &Model,
    data: &[Example],
    threshold: f32,
    index: &crate::semantic::SemanticIndex,
    vectors: &[Option<Vec<f32>>],
) -> Vec<Option<crate::semantic::SemanticMatch>> {
    let alone = threshold.max(index.options().lexical_threshold);
    let mut matches = Vec::with_capacity(data.len());
    for (i, example) in data.iter().enumerate() {
        run.decisions[i] = local_decision(&run.best[i], run.confidence[i], alone);
        if run.decisions[i].stage == "local" {
            matches.push(None);
            continue;
        }
        let lexical = model.probabilities(&example.text);
        let found = vectors.get(i).and_then(Option::as_ref).and_then(|v| {
            let lexical = crate::semantic::Lexical::of(model, &example.text, &lexical);
            index.decide(v, Some(lexical))
        });
        if let Some(m) = &found {
            run.best[i].clone_from(&m.intent);
            if m.sure {
                run.decisions[i] = Decision {
                    intent: m.intent.clone(),
                    stage: "semantic",
                };
            }
        }
        matches.push(found);
    }
    matches
}

/// The local stages' trade-off at each semantic threshold of `thresholds`, from the answers
/// of one [`run_semantic`] (nothing is embedded again).
pub fn semantic_sweep(
    data: &[Example],
    run: &LocalRun,
    matches: &[Option<crate::semantic::SemanticMatch>],
    thresholds: &[f32],
) -> Vec<ThresholdPoint> {
    thresholds
        .iter()
        .map(|&threshold| {
            let decisions = run
                .decisions
                .iter()
                .zip(matches)
                .map(|(decision, m)| match m {
                    _ if decision.stage == "local" => decision.clone(),
                    Some(m) if m.confidence >= threshold => Decision {
                        intent: m.intent.clone(),
                        stage: "semantic",
                    },
                    _ => Decision {
                        intent: OUT_OF_SCOPE.to_owned(),
                        stage: "fallback",
                    },
                })
                .collect();
            point(data, run, decisions, threshold)
        })
        .collect()
}

/// The local stages' trade-off when `run` is decided as `decisions` at `threshold`.
fn point(
    data: &[Example],
    run: &LocalRun,
    decisions: Vec<Decision>,
    threshold: f32,
) -> ThresholdPoint {
    let decided = LocalRun {
        decisions,
        ..run.clone()
    };
    let r = report_of(data, &decided, threshold, 0);
    ThresholdPoint {
        threshold: (f64::from(threshold) * 1000.0).round() / 1000.0,
        local_coverage: r.local_coverage,
        local_precision: r.local_precision,
        oos_recall: r.oos_recall,
    }
}

/// The local stage's coverage, precision and out-of-scope recall at each of `thresholds`,
/// from the confidences of one run (no model is run again): the [`report`] of the local stage
/// re-decided at each threshold.
pub fn sweep(data: &[Example], run: &LocalRun, thresholds: &[f32]) -> Vec<ThresholdPoint> {
    thresholds
        .iter()
        .map(|&threshold| {
            let decisions = run
                .best
                .iter()
                .zip(&run.confidence)
                .map(|(best, confidence)| local_decision(best, *confidence, threshold))
                .collect();
            point(data, run, decisions, threshold)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TrainOptions;

    fn ex(text: &str, intent: &str) -> Example {
        Example::new(text, intent)
    }

    #[test]
    fn the_semantic_stage_answers_what_the_lexical_model_leaves() {
        let train = vec![
            ex("where is my order", "status"),
            ex("track my order", "status"),
            ex("opening hours", "hours"),
            ex("when are you open", "hours"),
        ];
        let model = Model::train(&train, TrainOptions::default()).unwrap();
        // Vectors: `status` along the first axis, `hours` along the second.
        let axis = |k: usize| {
            let mut v = vec![0.05f32; 3];
            v[k] = 1.0;
            let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            v.into_iter().map(|x| x / n).collect::<Vec<f32>>()
        };
        let examples: Vec<(String, Vec<f32>)> = (0..4)
            .flat_map(|_| {
                [
                    ("status".to_owned(), axis(0)),
                    ("hours".to_owned(), axis(1)),
                ]
            })
            .collect();
        let options = crate::semantic::SemanticOptions {
            lexical_weight: 0.0,
            ..crate::semantic::SemanticOptions::default()
        };
        let index = crate::semantic::SemanticIndex::train("m", &examples, options).unwrap();
        let data = vec![
            ex("xyzzy", "status"),
            ex("plugh", "hours"),
            ex("a poem please", OUT_OF_SCOPE),
            ex("something", "status"),
        ];
        let vectors = vec![Some(axis(0)), Some(axis(1)), Some(axis(2)), None];
        let mut run = run_local(&model, &data, 0.8);
        let matches = run_semantic(&mut run, &model, &data, 0.8, &index, &vectors);
        let stages: Vec<&str> = run.decisions.iter().map(|d| d.stage).collect();
        assert_eq!(stages, ["semantic", "semantic", "fallback", "fallback"]);
        assert_eq!(run.best[0], "status");
        assert!(matches[3].is_none(), "no vector: left to the next stage");
        let report = report(&data, &run, 0.8, 0);
        assert!((report.local_coverage - 2.0 / 3.0).abs() < 1e-9);
        assert_eq!(report.local_precision, 1.0);
        assert_eq!(report.oos_recall, 1.0);
        assert!((report.stage_share["semantic"] - 0.5).abs() < 1e-9);
        // A lower semantic threshold answers the out-of-scope message too, a higher one less.
        let sweep = semantic_sweep(&data, &run, &matches, &[0.0, 1.01]);
        assert_eq!(sweep[0].oos_recall, 0.0);
        assert_eq!(sweep[1].local_coverage, 0.0);
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
        assert_eq!(
            report.cascade_accuracy, 0.0,
            "but every customer got the fallback"
        );
        assert!((report.oos_precision - 1.0 / 3.0).abs() < 1e-9);
        assert_eq!(report.stage_share["fallback"], 1.0);
        assert!(
            read_jsonl("{\"text\": 1}")
                .unwrap_err()
                .starts_with("line 1")
        );
    }

    #[test]
    fn each_language_is_reported_apart_when_the_data_names_it() {
        let train = vec![
            ex("where is my order", "status"),
            ex("track my order", "status"),
            ex("opening hours", "hours"),
            ex("when are you open", "hours"),
        ];
        let model = Model::train(&train, TrainOptions::default()).unwrap();
        let lang = |text: &str, intent: &str, language: &str| Example {
            language: Some(language.into()),
            ..ex(text, intent)
        };
        let data = vec![
            lang("track my order", "status", "en"),
            lang("when are you open", "hours", "en"),
            lang("onde está a minha encomenda", "status", "pt"),
            lang("qwerty", OUT_OF_SCOPE, "pt"),
        ];
        let report = evaluate(&model, &data, 0.0);
        let (en, pt) = (&report.by_language["en"], &report.by_language["pt"]);
        assert_eq!(
            (en.messages, en.in_scope, pt.messages, pt.in_scope),
            (2, 2, 2, 1)
        );
        assert_eq!(en.cascade_accuracy, 1.0);
        // A language's figures are those of its messages evaluated alone.
        let alone = evaluate(&model, &data[2..], 0.0);
        assert_eq!(
            (
                pt.in_scope_accuracy,
                pt.cascade_accuracy,
                pt.local_coverage,
                pt.oos_recall
            ),
            (
                alone.in_scope_accuracy,
                alone.cascade_accuracy,
                alone.local_coverage,
                alone.oos_recall
            )
        );
        assert_eq!(report.messages, 4);
        // Without languages in the data, no split (and none in the JSON).
        let plain = evaluate(&model, &[ex("track my order", "status")], 0.0);
        assert!(plain.by_language.is_empty());
        let json = serde_json::to_value(&plain).unwrap();
        assert!(json.get("by_language").is_none());
        let read = read_jsonl(r#"{"text": "hola", "intent": "oos", "language": "es"}"#).unwrap();
        assert_eq!(read[0].language.as_deref(), Some("es"));
    }

    #[test]
    fn labels_confusions_and_the_threshold_sweep_follow_the_decisions() {
        let data = vec![
            ex("a1", "a"),
            ex("a2", "a"),
            ex("b1", "b"),
            ex("o1", OUT_OF_SCOPE),
            ex("o2", OUT_OF_SCOPE),
        ];
        let local = |intent: &str| Decision {
            intent: intent.to_owned(),
            stage: "local",
        };
        let left = || Decision {
            intent: OUT_OF_SCOPE.to_owned(),
            stage: "fallback",
        };
        // What the local stage does at 0.8 with these confidences.
        let run = LocalRun {
            decisions: vec![local("a"), left(), local("b"), local("a"), left()],
            best: ["a", "b", "b", "a", "b"].map(str::to_owned).to_vec(),
            times_us: vec![1.0; 5],
            confidence: vec![Some(0.9), Some(0.6), Some(0.95), Some(0.85), None],
        };
        let report = report(&data, &run, 0.8, 0);
        let scores: Vec<(&str, usize, f64)> = report
            .labels
            .iter()
            .map(|l| (l.label.as_str(), l.support, l.f1))
            .collect();
        assert_eq!(scores, [("a", 2, 0.5), ("oos", 2, 0.5), ("b", 1, 1.0)]);
        assert!((report.macro_f1 - 2.0 / 3.0).abs() < 1e-9);
        let pairs: Vec<(&str, &str, usize, &str)> = report
            .confusions
            .iter()
            .map(|c| {
                (
                    c.expected.as_str(),
                    c.decided.as_str(),
                    c.count,
                    c.example.as_str(),
                )
            })
            .collect();
        assert_eq!(pairs, [("a", "oos", 1, "a2"), ("oos", "a", 1, "o1")]);
        // What the customers got: "a2" went to the fallback although its best guess was
        // wrong anyway; a1 and b1 were answered right.
        assert!((report.cascade_accuracy - 2.0 / 3.0).abs() < 1e-9);
        assert!((report.in_scope_accuracy - 2.0 / 3.0).abs() < 1e-9);
        // Local answered a1, b1 right and o1 wrong; the fallback took a2 (wrong) and o2.
        assert!((report.stage_precision["local"] - 2.0 / 3.0).abs() < 1e-9);
        assert!((report.stage_precision["fallback"] - 0.5).abs() < 1e-9);
        assert!(
            !report.stage_precision.contains_key("llm"),
            "no LLM decided anything"
        );

        let points = sweep(&data, &run, &[0.5, 0.8, 0.99]);
        let at = |i: usize| {
            let p = &points[i];
            (p.local_coverage, p.local_precision, p.oos_recall)
        };
        assert_eq!(at(0), (1.0, 0.5, 0.5));
        assert_eq!(
            at(1),
            (
                report.local_coverage,
                report.local_precision,
                report.oos_recall
            ),
            "the sweep at the run's threshold is the report"
        );
        assert_eq!(at(1), (2.0 / 3.0, 2.0 / 3.0, 0.5));
        assert_eq!(at(2), (0.0, 0.0, 1.0), "nothing answered");
    }
}
