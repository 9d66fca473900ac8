//! Text → sparse features: word unigrams and bigrams (of word stems, in the bot's languages),
//! and character n-grams (2 to 5) of each word with its boundaries, hashed to 32-bit ids,
//! weighted by sublinear term frequency.
//! Character n-grams make the model robust to typos, plurals and word forms; stems let
//! "cancelled", "cancelling" and "cancel" share a word feature; word bigrams keep some order
//! ("order status" is not "status of my order").

use std::borrow::Cow;

use rust_stemmers::{Algorithm, Stemmer};

/// How much more a word or word-pair feature weighs than one character n-gram: a word yields
/// one word feature but some twenty n-grams, which would otherwise drown it (+0.5 point of
/// accuracy on CLINC150's validation split at 2; 3 and 5 were worse).
const WORD_BOOST: f32 = 2.0;

/// A feature id and its weight.
pub type Feature = (u32, f32);

/// Lower-cases, keeps letters and digits (any script), and splits into words.
pub fn words(text: &str) -> Vec<String> {
    text.to_lowercase()
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_owned)
        .collect()
}

/// The Snowball stemmer for a language code (`en`, `pt-BR`, `es_MX`…), when there is one.
fn algorithm(language: &str) -> Option<Algorithm> {
    let base = language
        .split(['-', '_'])
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    Some(match base.as_str() {
        "ar" => Algorithm::Arabic,
        "da" => Algorithm::Danish,
        "nl" => Algorithm::Dutch,
        "en" => Algorithm::English,
        "fi" => Algorithm::Finnish,
        "fr" => Algorithm::French,
        "de" => Algorithm::German,
        "el" => Algorithm::Greek,
        "hu" => Algorithm::Hungarian,
        "it" => Algorithm::Italian,
        "no" | "nb" | "nn" => Algorithm::Norwegian,
        "pt" => Algorithm::Portuguese,
        "ro" => Algorithm::Romanian,
        "ru" => Algorithm::Russian,
        "es" => Algorithm::Spanish,
        "sv" => Algorithm::Swedish,
        "ta" => Algorithm::Tamil,
        "tr" => Algorithm::Turkish,
        _ => return None,
    })
}

/// Turns text into features, stemming words for the bot's languages.
#[derive(Debug, Clone, Default)]
pub struct Featurizer {
    /// The stemmers' algorithms, the default language's first; none: words as written.
    languages: Vec<Algorithm>,
}

impl Featurizer {
    /// A featurizer for these language codes (the first is the default); codes without a
    /// stemmer are ignored, so an empty or unknown list keeps words as written.
    pub fn new<S: AsRef<str>>(languages: &[S]) -> Self {
        let mut found: Vec<Algorithm> = Vec::new();
        for algorithm in languages.iter().filter_map(|l| algorithm(l.as_ref())) {
            if !found.contains(&algorithm) {
                found.push(algorithm);
            }
        }
        Self { languages: found }
    }

    /// The words' terms: per word, its stem in each language (distinct), the default
    /// language's first; the word itself without stemmers.
    fn terms<'w>(&self, words: &'w [String]) -> Vec<Vec<Cow<'w, str>>> {
        let stemmers: Vec<Stemmer> = self.languages.iter().map(|a| Stemmer::create(*a)).collect();
        words
            .iter()
            .map(|word| {
                let mut terms: Vec<Cow<'w, str>> = Vec::with_capacity(stemmers.len().max(1));
                for stemmer in &stemmers {
                    let stem = stemmer.stem(word);
                    if !terms.contains(&stem) {
                        terms.push(stem);
                    }
                }
                if terms.is_empty() {
                    terms.push(Cow::Borrowed(word.as_str()));
                }
                terms
            })
            .collect()
    }

    /// The features of a text, each id once, with weight `1 + ln(count)` (word features
    /// times [`WORD_BOOST`]), not yet normalised.
    pub fn extract(&self, text: &str) -> Vec<Feature> {
        let words = words(text);
        let terms = self.terms(&words);
        let mut ids: Vec<u32> = Vec::with_capacity(words.len() * 16);
        let mut word_ids: Vec<u32> = Vec::with_capacity(words.len() * 3);
        for (i, word) in words.iter().enumerate() {
            for term in &terms[i] {
                word_ids.push(hash(b'w', &[term.as_bytes()]));
            }
            let next = terms.get(i + 1).and_then(|t| t.first());
            if let (Some(first), Some(next)) = (terms[i].first(), next) {
                word_ids.push(hash(b'b', &[first.as_bytes(), next.as_bytes()]));
            }
            let padded: Vec<char> = std::iter::once('<')
                .chain(word.chars())
                .chain(std::iter::once('>'))
                .collect();
            for n in 2..=5 {
                if padded.len() < n {
                    break;
                }
                for window in padded.windows(n) {
                    let gram: String = window.iter().collect();
                    ids.push(hash(b'c', &[gram.as_bytes()]));
                }
            }
        }
        ids.extend_from_slice(&word_ids);
        ids.sort_unstable();
        word_ids.sort_unstable();
        let mut features: Vec<Feature> = Vec::with_capacity(ids.len());
        for id in ids {
            match features.last_mut() {
                Some((last, count)) if *last == id => *count += 1.0,
                _ => features.push((id, 1.0)),
            }
        }
        for (id, w) in &mut features {
            *w = 1.0 + w.ln();
            if word_ids.binary_search(id).is_ok() {
                *w *= WORD_BOOST;
            }
        }
        features
    }
}

/// The features of a text with words as written (no stemming): [`Featurizer::extract`] of a
/// featurizer without languages.
pub fn extract(text: &str) -> Vec<Feature> {
    Featurizer::default().extract(text)
}

/// FNV-1a over a kind tag and the bytes, so word and character features never collide by
/// construction of the same string.
fn hash(kind: u8, parts: &[&[u8]]) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    let mut eat = |b: u8| {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    };
    eat(kind);
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            eat(0x1f);
        }
        for &b in *part {
            eat(b);
        }
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_and_features_are_case_and_punctuation_blind() {
        assert_eq!(words("Where's my ORDER?!"), ["where", "s", "my", "order"]);
        assert_eq!(extract("Order status"), extract("order, STATUS!"));
        let f = extract("aaa aaa");
        assert!(
            f.windows(2).all(|w| w[0].0 < w[1].0),
            "each id once, sorted"
        );
        assert!(
            f.iter().any(|(_, w)| *w > 1.0),
            "repeated features weigh more"
        );
        assert!(extract("").is_empty());
    }

    #[test]
    fn stems_join_word_forms_in_each_language() {
        let word =
            |f: &Featurizer, text: &str| hash(b'w', &[f.terms(&words(text))[0][0].as_bytes()]);
        let english = Featurizer::new(&["en"]);
        assert_eq!(word(&english, "cancelled"), word(&english, "cancelling"));
        let has =
            |f: &Featurizer, text: &str, id: u32| f.extract(text).iter().any(|(i, _)| *i == id);
        assert!(has(&english, "cancelled", word(&english, "cancel")));
        let raw = Featurizer::default();
        assert_ne!(word(&raw, "cancelled"), word(&raw, "cancelling"));
        let both = Featurizer::new(&["pt-BR", "en", "xx"]);
        assert_eq!(both.languages, [Algorithm::Portuguese, Algorithm::English]);
        assert_eq!(word(&both, "encomendas"), word(&both, "encomenda"));
        assert_eq!(Featurizer::new(&["ja"]).languages, []);
    }
}
