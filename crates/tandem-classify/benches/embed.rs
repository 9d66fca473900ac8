//! The in-process embedder on the real all-MiniLM-L6-v2 (from `scripts/fetch-model.sh`): one
//! customer message at a time, as the server embeds them, next to the local model's prediction
//! of the same messages as the baseline; the semantic head's decision on a ready vector; and
//! one weight product of the model's shapes in `f32` (as the model runs) and in candle's
//! `int8` (`Q8_0`) quantized form, to see whether quantizing would pay.
//! Run it on one core for the per-core figure:
//!
//!     scripts/fetch-model.sh
//!     RAYON_NUM_THREADS=1 taskset -c 0 cargo bench -p tandem-classify --features semantic --bench embed
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::path::PathBuf;

use criterion::{Criterion, criterion_group, criterion_main};
use tandem_classify::local_embed::{LocalEmbedder, LocalOptions};
use tandem_classify::semantic::{SemanticIndex, SemanticOptions};
use tandem_classify::{Example, Model, TrainOptions};

/// Short messages of the length customers send (4 to 12 words).
const MESSAGES: [&str; 8] = [
    "has my parcel been dispatched yet?",
    "these pots came cracked, I want my money back",
    "what time do you close today?",
    "can I talk to someone please",
    "how much is delivery to porto",
    "I ordered two plants last week and nothing has arrived, can you check",
    "hello",
    "do you have gift cards",
];

fn model_dir() -> PathBuf {
    std::env::var_os("TANDEM_TEST_MODEL").map_or_else(
        || {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                .join(".cache/tandem/models/all-MiniLM-L6-v2")
        },
        PathBuf::from,
    )
}

fn bench(c: &mut Criterion) {
    let embedder = LocalEmbedder::load(&model_dir(), LocalOptions::default())
        .expect("the model: run scripts/fetch-model.sh");
    let texts: Vec<String> = MESSAGES.iter().map(|m| (*m).to_owned()).collect();
    let mut i = 0;
    c.bench_function("embed one message (all-MiniLM-L6-v2)", |b| {
        b.iter(|| {
            i = (i + 1) % texts.len();
            embedder
                .embed_blocking(black_box(std::slice::from_ref(&texts[i])))
                .unwrap()
        });
    });
    let examples: Vec<Example> = MESSAGES
        .iter()
        .enumerate()
        .map(|(k, m)| Example::new(*m, format!("intent{}", k % 4)))
        .collect();
    let lexical = Model::train(&examples, TrainOptions::default()).unwrap();
    c.bench_function("local model predicts one message (baseline)", |b| {
        b.iter(|| {
            i = (i + 1) % texts.len();
            lexical.predict(black_box(&texts[i]))
        });
    });
    // A head of 150 intents × 10 examples on real vectors of the messages, reused.
    let vectors = embedder.embed_blocking(&texts).unwrap();
    let labelled: Vec<(String, Vec<f32>)> = (0..1500)
        .map(|k| {
            (
                format!("intent{}", k % 150),
                vectors[k % vectors.len()].clone(),
            )
        })
        .collect();
    let head = SemanticIndex::train("m", &labelled, SemanticOptions::default()).unwrap();
    c.bench_function("semantic head decides on a vector (150 intents)", |b| {
        b.iter(|| {
            i = (i + 1) % vectors.len();
            head.decide(black_box(&vectors[i]), None)
        });
    });
}

/// A message's 12 token vectors through one weight matrix of all-MiniLM-L6-v2's shapes
/// (in → out), in `f32` and quantized to `Q8_0`.
fn products(c: &mut Criterion) {
    use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
    use candle_core::{Device, Module, Tensor};
    let device = Device::Cpu;
    for (inputs, outputs) in [(384, 1536), (1536, 384), (384, 384)] {
        let x = Tensor::randn(0f32, 1.0, (1, 12, inputs), &device).unwrap();
        let w = Tensor::randn(0f32, 0.05, (outputs, inputs), &device).unwrap();
        let f32_product = candle_nn::Linear::new(w.clone(), None);
        let q8_product =
            QMatMul::from_qtensor(QTensor::quantize(&w, GgmlDType::Q8_0).unwrap()).unwrap();
        c.bench_function(
            &format!("product 12x{inputs} by {inputs}x{outputs}, f32"),
            |b| {
                b.iter(|| f32_product.forward(black_box(&x)).unwrap());
            },
        );
        c.bench_function(
            &format!("product 12x{inputs} by {inputs}x{outputs}, q8_0"),
            |b| {
                b.iter(|| q8_product.forward(black_box(&x)).unwrap());
            },
        );
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(50);
    targets = bench, products
}
criterion_main!(benches);
