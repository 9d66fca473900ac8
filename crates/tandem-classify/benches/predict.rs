//! Prediction and training cost of the local model at 150 intents × 100 examples, on
//! generated utterances (8 words from a 3,000-word vocabulary, 3 of them typical of the
//! intent), next to feature extraction alone as the baseline.
//!
//!     cargo bench -p tandem-classify
#![allow(missing_docs, clippy::unwrap_used)]

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use tandem_classify::{Example, Model, TrainOptions, features};

struct Words(u64);

impl Words {
    fn next(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % n
    }

    fn word(&mut self, n: u64) -> String {
        let i = self.next(n);
        format!(
            "w{}{}",
            ["ka", "lo", "mi", "su", "te"][usize::try_from(i % 5).unwrap()],
            i
        )
    }

    fn sentence(&mut self, intent: u64) -> String {
        let mut words: Vec<String> = (0..5).map(|_| self.word(3000)).collect();
        for k in 0..3 {
            words.insert(
                usize::try_from(self.next(5)).unwrap(),
                format!("i{intent}x{}", (self.next(4) + k) % 6),
            );
        }
        words.join(" ")
    }
}

fn examples() -> Vec<Example> {
    let mut words = Words(7);
    (0..150u64)
        .flat_map(|intent| (0..100).map(move |_| intent))
        .map(|intent| Example::new(words.sentence(intent), format!("intent_{intent}")))
        .collect()
}

fn benches(c: &mut Criterion) {
    let examples = examples();
    // As the server trains: word stems of the bot's language.
    let options = TrainOptions {
        languages: vec!["en".into()],
        ..TrainOptions::default()
    };
    let featurizer = features::Featurizer::new(&["en"]);
    let model = Model::train(&examples, options.clone()).unwrap();
    let mut words = Words(99);
    let queries: Vec<String> = (0..64).map(|i| words.sentence(i % 150)).collect();
    let mut group = c.benchmark_group("classify");
    let mut i = 0;
    group.bench_function("baseline_extract_features", |b| {
        b.iter(|| {
            i = (i + 1) % queries.len();
            featurizer.extract(black_box(&queries[i]))
        });
    });
    group.bench_function("predict_150_intents", |b| {
        b.iter(|| {
            i = (i + 1) % queries.len();
            model.predict(black_box(&queries[i]))
        });
    });
    group.sample_size(10);
    group.bench_function("train_150x100", |b| {
        b.iter(|| Model::train(black_box(&examples), options.clone()).unwrap());
    });
    group.finish();
}

criterion_group!(predict, benches);
criterion_main!(predict);
