//! The answers an `ask` step accepts, and the value each one stores in its slot.

use regex::Regex;
use serde_json::{Value, json};
use tandem_domain::MessageContent;

/// What an `ask` step accepts.
#[derive(Debug, Clone)]
pub enum Expect {
    /// Any non-empty text.
    Text,
    /// A number, optionally within bounds; `1,5` and `1.5` both read as 1.5.
    Number {
        /// Smallest accepted.
        min: Option<f64>,
        /// Largest accepted.
        max: Option<f64>,
    },
    /// An e-mail address (stored in lower case).
    Email,
    /// A phone number of 7 to 15 digits, with optional `+`, spaces, dashes, dots or brackets
    /// (stored as digits with a leading `+` when one was given).
    Phone,
    /// A date: `YYYY-MM-DD`, `DD/MM/YYYY`, `DD-MM-YYYY`, `today` or `tomorrow` (stored as
    /// `YYYY-MM-DD`).
    Date,
    /// One of the choices (any case), or its number in the list (stored as written in the flow).
    Choice(Vec<String>),
    /// Text matching the pattern (stored whole; named groups are stored too).
    Regex(Regex),
    /// An image (stored as its media id, MIME type and caption).
    Image,
    /// A document.
    Document,
    /// A shared location (stored as latitude, longitude, name and address).
    Location,
    /// Any media: image, video, audio, document or sticker.
    Media,
}

/// The names `expect:` takes.
pub const EXPECT_NAMES: &[&str] = &[
    "text", "number", "email", "phone", "date", "choice", "regex", "image", "document", "location",
    "media",
];

impl Expect {
    /// Describes the expected answer in words, for the LLM's slot extraction.
    pub fn describe(&self) -> String {
        match self {
            Self::Text => "any text".into(),
            Self::Number { min, max } => match (min, max) {
                (Some(a), Some(b)) => format!("a number from {a} to {b}"),
                (Some(a), None) => format!("a number of at least {a}"),
                (None, Some(b)) => format!("a number of at most {b}"),
                (None, None) => "a number".into(),
            },
            Self::Email => "an e-mail address".into(),
            Self::Phone => "a phone number (7 to 15 digits, optional +)".into(),
            Self::Date => "a date as YYYY-MM-DD".into(),
            Self::Choice(options) => format!("one of: {}", options.join(", ")),
            Self::Regex(re) => format!("text matching the regular expression {}", re.as_str()),
            Self::Image => "an image".into(),
            Self::Document => "a document".into(),
            Self::Location => "a location".into(),
            Self::Media => "a photo, video, audio or document".into(),
        }
    }

    /// Returns true when the step waits for something other than text.
    pub fn wants_media(&self) -> bool {
        matches!(
            self,
            Self::Image | Self::Document | Self::Location | Self::Media
        )
    }

    /// Checks an answer; returns the value to store in the slot, or `None` when it is
    /// refused. `today` is the business's local date.
    pub fn accept(&self, content: &MessageContent, today: jiff::civil::Date) -> Option<Value> {
        match (self, content) {
            (
                Self::Location,
                MessageContent::Location {
                    latitude,
                    longitude,
                    name,
                    address,
                },
            ) => Some(json!({
                "latitude": latitude, "longitude": longitude, "name": name, "address": address,
            })),
            (
                Self::Image | Self::Document | Self::Media,
                MessageContent::Media {
                    kind,
                    media_id,
                    mime_type,
                    caption,
                    filename,
                },
            ) => {
                let fits = match self {
                    Self::Image => kind == "image",
                    Self::Document => kind == "document",
                    _ => true,
                };
                fits.then(|| {
                    json!({
                        "kind": kind, "media_id": media_id, "mime_type": mime_type,
                        "caption": caption, "filename": filename,
                    })
                })
            }
            (_, _) if self.wants_media() => None,
            (_, content) => self.accept_text(answer_text(content)?.trim(), today),
        }
    }

    fn accept_text(&self, text: &str, today: jiff::civil::Date) -> Option<Value> {
        if text.is_empty() {
            return None;
        }
        match self {
            Self::Text => Some(json!(text)),
            Self::Number { min, max } => {
                let n: f64 = text.replace(',', ".").replace(' ', "").parse().ok()?;
                let within =
                    n.is_finite() && min.is_none_or(|m| n >= m) && max.is_none_or(|m| n <= m);
                within.then(|| {
                    if n.fract() == 0.0 && n.abs() < 9.0e15 {
                        json!(n as i64)
                    } else {
                        json!(n)
                    }
                })
            }
            Self::Email => {
                let (local, domain) = text.split_once('@')?;
                let ok = !local.is_empty()
                    && !text.contains(char::is_whitespace)
                    && domain.contains('.')
                    && !domain.starts_with('.')
                    && !domain.ends_with('.')
                    && !domain.contains('@');
                ok.then(|| json!(text.to_lowercase()))
            }
            Self::Phone => {
                let allowed = |c: char| c.is_ascii_digit() || " -.()+".contains(c);
                if !text.chars().all(allowed) || text[1.min(text.len())..].contains('+') {
                    return None;
                }
                let digits: String = text.chars().filter(char::is_ascii_digit).collect();
                let plus = if text.starts_with('+') { "+" } else { "" };
                (7..=15)
                    .contains(&digits.len())
                    .then(|| json!(format!("{plus}{digits}")))
            }
            Self::Date => parse_date(text, today).map(|d| json!(d.to_string())),
            Self::Choice(choices) => {
                let lower = text.to_lowercase();
                let by_number = lower
                    .parse::<usize>()
                    .ok()
                    .and_then(|n| n.checked_sub(1))
                    .and_then(|i| choices.get(i));
                by_number
                    .or_else(|| choices.iter().find(|c| c.to_lowercase() == lower))
                    .map(|c| json!(c))
            }
            Self::Regex(re) => {
                let caps = re.captures(text)?;
                let named: Vec<_> = re.capture_names().flatten().collect();
                if named.is_empty() {
                    return Some(json!(text));
                }
                let mut object = serde_json::Map::new();
                object.insert("text".into(), json!(text));
                for name in named {
                    if let Some(m) = caps.name(name) {
                        object.insert(name.into(), json!(m.as_str()));
                    }
                }
                Some(Value::Object(object))
            }
            Self::Image | Self::Document | Self::Location | Self::Media => None,
        }
    }
}

/// The text of an answer: typed text, or the title of a tapped button or list row.
pub fn answer_text(content: &MessageContent) -> Option<&str> {
    match content {
        MessageContent::Text { body } => Some(body),
        MessageContent::ButtonReply { title, .. } | MessageContent::ListReply { title, .. } => {
            Some(title)
        }
        MessageContent::TemplateButton { text, .. } => Some(text),
        _ => None,
    }
}

fn parse_date(text: &str, today: jiff::civil::Date) -> Option<jiff::civil::Date> {
    let lower = text.to_lowercase();
    match lower.as_str() {
        "today" | "hoje" | "hoy" => return Some(today),
        "tomorrow" | "amanhã" | "amanha" | "mañana" | "manana" => return today.tomorrow().ok(),
        _ => {}
    }
    if let Ok(date) = lower.parse::<jiff::civil::Date>() {
        return Some(date);
    }
    let parts: Vec<&str> = lower.split(['/', '-', '.']).collect();
    if let [d, m, y] = parts[..] {
        let (d, m, y): (i8, i8, i16) = (d.parse().ok()?, m.parse().ok()?, y.parse().ok()?);
        let y = if y < 100 { 2000 + y } else { y };
        return jiff::civil::Date::new(y, m, d).ok();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(s: &str) -> MessageContent {
        MessageContent::Text { body: s.into() }
    }

    fn today() -> jiff::civil::Date {
        jiff::civil::date(2026, 11, 22)
    }

    #[test]
    fn each_validator_accepts_and_normalises_its_answers() {
        let number = Expect::Number {
            min: Some(1.0),
            max: Some(10.0),
        };
        assert_eq!(number.accept(&text(" 3 "), today()), Some(json!(3)));
        assert_eq!(number.accept(&text("2,5"), today()), Some(json!(2.5)));
        assert_eq!(number.accept(&text("11"), today()), None);
        assert_eq!(number.accept(&text("three"), today()), None);
        assert_eq!(
            Expect::Email.accept(&text("Ana@Shop.PT"), today()),
            Some(json!("ana@shop.pt"))
        );
        assert_eq!(Expect::Email.accept(&text("ana@shop"), today()), None);
        assert_eq!(
            Expect::Phone.accept(&text("+351 912-345-678"), today()),
            Some(json!("+351912345678"))
        );
        assert_eq!(Expect::Phone.accept(&text("12"), today()), None);
        assert_eq!(Expect::Phone.accept(&text("91+2345678"), today()), None);
        assert_eq!(
            Expect::Date.accept(&text("tomorrow"), today()),
            Some(json!("2026-11-23"))
        );
        assert_eq!(
            Expect::Date.accept(&text("05/12/2026"), today()),
            Some(json!("2026-12-05"))
        );
        assert_eq!(Expect::Date.accept(&text("31/02/2026"), today()), None);
        let choice = Expect::Choice(vec!["Small".into(), "Large".into()]);
        assert_eq!(choice.accept(&text("large"), today()), Some(json!("Large")));
        assert_eq!(choice.accept(&text("1"), today()), Some(json!("Small")));
        assert_eq!(choice.accept(&text("3"), today()), None);
        let order = Expect::Regex(Regex::new(r"^#?(?P<number>\d{5})$").unwrap());
        assert_eq!(
            order.accept(&text("#12345"), today()),
            Some(json!({"text": "#12345", "number": "12345"}))
        );
        assert_eq!(Expect::Text.accept(&text("   "), today()), None);
    }

    #[test]
    fn media_steps_take_only_their_media() {
        let image = MessageContent::Media {
            kind: "image".into(),
            media_id: Some("m1".into()),
            mime_type: Some("image/jpeg".into()),
            caption: None,
            filename: None,
        };
        assert_eq!(
            Expect::Image.accept(&image, today()).unwrap()["media_id"],
            "m1"
        );
        assert_eq!(Expect::Document.accept(&image, today()), None);
        assert!(Expect::Media.accept(&image, today()).is_some());
        assert_eq!(Expect::Image.accept(&text("here"), today()), None);
        assert_eq!(Expect::Text.accept(&image, today()), None);
        let place = MessageContent::Location {
            latitude: 38.7,
            longitude: -9.1,
            name: None,
            address: None,
        };
        assert_eq!(
            Expect::Location.accept(&place, today()).unwrap()["latitude"],
            38.7
        );
    }
}
