//! The local model: multinomial logistic regression over TF-IDF weighted, L2-normalised
//! sparse features (see [`crate::features`]), trained in-process from example utterances.
//!
//! Training is plain stochastic gradient descent over shuffled examples (a fixed seed, so the
//! same examples give the same model), with sparse updates: a class whose predicted
//! probability is already near its target is not touched. Prediction is one pass over the
//! message's features, adding each feature's row of class weights: tens of microseconds at
//! 150 intents.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use crate::features::{Feature, Featurizer};

/// One training utterance.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
pub struct Example {
    /// What a customer wrote.
    pub text: String,
    /// Its intent (a flow id).
    pub intent: String,
    /// The language it is written in (`en`, `pt`, `es`…), when the data says: evaluation
    /// then reports each language apart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
}

impl Example {
    /// An utterance labelled with its intent.
    pub fn new(text: impl Into<String>, intent: impl Into<String>) -> Self {
        Self {
            text: text.into(),
            intent: intent.into(),
            language: None,
        }
    }

    /// The intent's own name as an example of itself, `_` and `-` read as spaces
    /// (`credit_score` → "credit score"): names carry meaning a handful of examples may miss.
    pub fn from_name(intent: &str) -> Self {
        Self::new(intent.replace(['_', '-'], " "), intent)
    }
}

/// Hashes a feature id to itself: ids are FNV hashes already, so hashing them again (as the
/// default SipHash does) only costs time, in training and in every prediction.
#[derive(Debug, Default, Clone, Copy)]
struct FeatureIdHasher(u64);

impl Hasher for FeatureIdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) | u64::from(b);
        }
    }

    fn write_u32(&mut self, id: u32) {
        // Spread the id over the high bits too: the table picks buckets from them.
        self.0 = u64::from(id).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

/// Feature id → value, hashed by [`FeatureIdHasher`].
type ById<V> = HashMap<u32, V, BuildHasherDefault<FeatureIdHasher>>;

/// How training runs.
#[derive(Debug, Clone)]
pub struct TrainOptions {
    /// Passes over the examples.
    pub epochs: usize,
    /// The first pass's step size; it decays as `1 / (1 + decay · epoch)`.
    pub learning_rate: f32,
    /// Step-size decay per pass.
    pub decay: f32,
    /// Features seen in fewer examples than this are ignored.
    pub min_count: u32,
    /// Language codes whose stemmers make the word features (the first is the default; none:
    /// words as written).
    pub languages: Vec<String>,
}

impl Default for TrainOptions {
    fn default() -> Self {
        Self {
            epochs: 6,
            learning_rate: 8.0,
            decay: 0.3,
            min_count: 1,
            languages: Vec::new(),
        }
    }
}

/// Why a model could not be trained.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TrainError {
    /// Fewer than two intents have examples.
    #[error("a classifier needs examples of at least two intents (got {0})")]
    TooFewIntents(usize),
}

/// A trained model.
#[derive(Debug, Clone)]
pub struct Model {
    featurizer: Featurizer,
    intents: Vec<String>,
    /// Feature id → row.
    rows: ById<u32>,
    /// Inverse document frequency per row.
    idf: Vec<f32>,
    /// Row-major: `rows × intents`.
    weights: Vec<f32>,
    bias: Vec<f32>,
}

/// The model's answer for one message.
#[derive(Debug, Clone, PartialEq)]
pub struct Prediction {
    /// The most likely intent.
    pub intent: String,
    /// Its probability, 0 to 1.
    pub confidence: f32,
    /// The runner-up and its probability, when there is one.
    pub runner_up: Option<(String, f32)>,
    /// True when the message shares no feature with any example (certainly out of scope).
    pub unknown_words_only: bool,
}

/// A deterministic xorshift generator for shuffling.
pub(crate) struct Shuffle(pub(crate) u64);

impl Shuffle {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    pub(crate) fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = usize::try_from(self.next() % (i as u64 + 1)).unwrap_or(0);
            items.swap(i, j);
        }
    }
}

/// Turns scores into probabilities, in place.
pub(crate) fn softmax(scores: &mut [f32]) {
    let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0;
    for s in scores.iter_mut() {
        *s = (*s - max).exp();
        sum += *s;
    }
    for s in scores.iter_mut() {
        *s /= sum;
    }
}

impl Model {
    /// Trains a model on `examples` (any order; each intent needs at least one).
    ///
    /// # Errors
    /// [`TrainError::TooFewIntents`] with fewer than two intents.
    pub fn train(examples: &[Example], options: TrainOptions) -> Result<Self, TrainError> {
        let mut intents: Vec<String> = examples.iter().map(|e| e.intent.clone()).collect();
        intents.sort();
        intents.dedup();
        if intents.len() < 2 {
            return Err(TrainError::TooFewIntents(intents.len()));
        }
        let classes = intents.len();
        let featurizer = Featurizer::new(&options.languages);
        let extracted: Vec<Vec<Feature>> = examples
            .iter()
            .map(|e| featurizer.extract(&e.text))
            .collect();
        let mut document_counts: ById<u32> = ById::default();
        for f in &extracted {
            for (id, _) in f {
                *document_counts.entry(*id).or_default() += 1;
            }
        }
        let mut ids: Vec<u32> = document_counts
            .iter()
            .filter(|(_, n)| **n >= options.min_count)
            .map(|(id, _)| *id)
            .collect();
        ids.sort_unstable();
        let n_docs = examples.len() as f32;
        let rows: ById<u32> = ids
            .iter()
            .enumerate()
            .map(|(i, id)| (*id, i as u32))
            .collect();
        let idf: Vec<f32> = ids
            .iter()
            .map(|id| (n_docs / (1.0 + document_counts[id] as f32)).ln() + 1.0)
            .collect();
        let mut model = Self {
            featurizer,
            intents,
            rows,
            idf,
            weights: vec![0.0; ids.len() * classes],
            bias: vec![0.0; classes],
        };
        let data: Vec<(Vec<(u32, f32)>, usize)> = examples
            .iter()
            .zip(&extracted)
            .map(|(e, f)| {
                let label = model.intents.binary_search(&e.intent).unwrap_or(0);
                (model.vectorise(f), label)
            })
            .collect();
        let mut order: Vec<usize> = (0..data.len()).collect();
        let mut rng = Shuffle(0x9e37_79b9_7f4a_7c15);
        let mut scores = vec![0.0f32; classes];
        let mut steps: Vec<(usize, f32)> = Vec::with_capacity(classes);
        // Averaged SGD: the model returned is the average of the weights over every step,
        // kept cheaply with sparse updates as `w - sum(t · update) / t`.
        let mut weighted = vec![0.0f32; model.weights.len()];
        let mut weighted_bias = vec![0.0f32; classes];
        let mut t: f32 = 1.0;
        for epoch in 0..options.epochs {
            rng.shuffle(&mut order);
            let rate = options.learning_rate / (1.0 + options.decay * epoch as f32);
            for &i in &order {
                let (x, label) = &data[i];
                model.scores_into(x, &mut scores);
                softmax(&mut scores);
                // The classes to move, then each feature's row once: the row's class
                // weights sit together in memory.
                steps.clear();
                for (k, p) in scores.iter().enumerate() {
                    let gradient = p - if k == *label { 1.0 } else { 0.0 };
                    if gradient.abs() < 2e-3 {
                        continue;
                    }
                    let step = rate * gradient;
                    model.bias[k] -= step * 0.1;
                    weighted_bias[k] -= t * step * 0.1;
                    steps.push((k, step));
                }
                for (row, value) in x {
                    let start = *row as usize * classes;
                    let (now, sum) = (
                        &mut model.weights[start..start + classes],
                        &mut weighted[start..start + classes],
                    );
                    for &(k, step) in &steps {
                        now[k] -= step * value;
                        sum[k] -= t * step * value;
                    }
                }
                t += 1.0;
            }
        }
        for (w, u) in model.weights.iter_mut().zip(&weighted) {
            *w -= u / t;
        }
        for (b, u) in model.bias.iter_mut().zip(&weighted_bias) {
            *b -= u / t;
        }
        Ok(model)
    }

    /// Maps features to rows with TF-IDF weights, L2-normalised; unknown features dropped.
    fn vectorise(&self, features: &[Feature]) -> Vec<(u32, f32)> {
        let mut x: Vec<(u32, f32)> = features
            .iter()
            .filter_map(|(id, tf)| {
                let row = *self.rows.get(id)?;
                Some((row, tf * self.idf[row as usize]))
            })
            .collect();
        let norm = x.iter().map(|(_, v)| v * v).sum::<f32>().sqrt();
        if norm > 0.0 {
            for (_, v) in &mut x {
                *v /= norm;
            }
        }
        x
    }

    fn scores_into(&self, x: &[(u32, f32)], scores: &mut [f32]) {
        let classes = self.intents.len();
        scores.copy_from_slice(&self.bias);
        for (row, value) in x {
            let start = *row as usize * classes;
            for (s, w) in scores.iter_mut().zip(&self.weights[start..start + classes]) {
                *s += w * value;
            }
        }
    }

    /// The intents the model knows, sorted.
    pub fn intents(&self) -> &[String] {
        &self.intents
    }

    /// The share of `text`'s features (weighted by their counts) the model learned: near 1
    /// for a message in the examples' words, near 0 for one in another language.
    pub fn known_share(&self, text: &str) -> f32 {
        let features = self.featurizer.extract(text);
        let total: f32 = features.iter().map(|(_, tf)| tf).sum();
        if total <= 0.0 {
            return 0.0;
        }
        let known: f32 = features
            .iter()
            .filter(|(id, _)| self.rows.contains_key(id))
            .map(|(_, tf)| tf)
            .sum();
        known / total
    }

    /// The probability of each intent for `text`, in [`Model::intents`] order.
    pub fn probabilities(&self, text: &str) -> Vec<f32> {
        self.probabilities_of(&self.vectorise(&self.featurizer.extract(text)))
    }

    fn probabilities_of(&self, x: &[(u32, f32)]) -> Vec<f32> {
        let mut scores = vec![0.0f32; self.intents.len()];
        self.scores_into(x, &mut scores);
        softmax(&mut scores);
        scores
    }

    /// Classifies a message.
    pub fn predict(&self, text: &str) -> Prediction {
        let x = self.vectorise(&self.featurizer.extract(text));
        let scores = self.probabilities_of(&x);
        let mut best = (0, f32::MIN);
        let mut second = (0, f32::MIN);
        for (k, p) in scores.iter().enumerate() {
            if *p > best.1 {
                second = best;
                best = (k, *p);
            } else if *p > second.1 {
                second = (k, *p);
            }
        }
        Prediction {
            intent: self.intents[best.0].clone(),
            confidence: best.1,
            runner_up: (second.1 > f32::MIN).then(|| (self.intents[second.0].clone(), second.1)),
            unknown_words_only: x.is_empty(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ex(text: &str, intent: &str) -> Example {
        Example::new(text, intent)
    }

    #[test]
    fn it_learns_intents_from_a_few_examples_and_is_deterministic() {
        let examples = vec![
            ex("where is my order", "order_status"),
            ex("has my package shipped yet", "order_status"),
            ex("track my parcel", "order_status"),
            ex("when are you open", "hours"),
            ex("what are your opening hours", "hours"),
            ex("are you open on sunday", "hours"),
            ex("i want to return this", "returns"),
            ex("how do i send an item back", "returns"),
            ex("refund for a broken pot", "returns"),
        ];
        let model = Model::train(&examples, TrainOptions::default()).unwrap();
        assert_eq!(model.predict("where's my parcel?").intent, "order_status");
        assert_eq!(model.predict("open on saturdays?").intent, "hours");
        assert_eq!(model.predict("can I get a refund").intent, "returns");
        let again = Model::train(&examples, TrainOptions::default()).unwrap();
        assert_eq!(
            model.predict("hello there").confidence,
            again.predict("hello there").confidence
        );
        assert!(model.predict("zzzz qqqq").unknown_words_only);
        assert_eq!(model.known_share("zzzz qqqq"), 0.0);
        assert!(model.known_share("where is my order") > 0.9);
        assert!(model.known_share("onde está a minha encomenda") < 0.5);
        assert!(model.predict("where is my order").confidence > model.predict("banana").confidence);
    }

    #[test]
    fn names_and_stems_teach_what_examples_miss() {
        assert_eq!(Example::from_name("credit_score").text, "credit score");
        assert_eq!(Example::from_name("pto-request").intent, "pto-request");
        let mut examples = vec![
            ex("what's my number with the bureau", "credit_score"),
            ex("when do you open", "hours"),
            ex("are you open on sunday", "hours"),
        ];
        let options = TrainOptions {
            languages: vec!["en".into()],
            ..TrainOptions::default()
        };
        let without = Model::train(&examples, options.clone()).unwrap();
        examples.push(Example::from_name("credit_score"));
        let with = Model::train(&examples, options).unwrap();
        let asked = "how good are my credit scores";
        assert_eq!(with.predict(asked).intent, "credit_score");
        assert!(
            with.predict(asked).confidence > without.predict(asked).confidence,
            "the name (and the stem of \"scores\") make the model surer"
        );
    }

    #[test]
    fn one_intent_is_not_enough() {
        let err = Model::train(&[ex("hi", "a")], TrainOptions::default()).unwrap_err();
        assert_eq!(err, TrainError::TooFewIntents(1));
    }
}
