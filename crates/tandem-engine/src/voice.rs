//! Voice notes at run time: the audio downloaded from the Graph API with the business's token,
//! then transcribed by the configured endpoint. Off unless a transcriber is configured; any
//! failure leaves the voice note an attachment (the turn answers it as before).

use std::sync::Arc;
use std::time::Instant;

use tandem_classify::transcribe::Transcriber;
use tandem_whatsapp::GraphClient;

use crate::metrics;

/// Largest audio file downloaded: WhatsApp's limit for audio (16 MB) with room to spare,
/// under OpenAI's 25 MB for a transcription.
pub const MAX_AUDIO_BYTES: usize = 20 * 1024 * 1024;

/// The transcriber and the Graph API client that fetches the audio.
#[derive(Debug, Clone)]
pub struct Voice {
    transcriber: Arc<Transcriber>,
    graph: GraphClient,
}

impl Voice {
    /// Transcribes with `transcriber` audio that `graph` (holding the business's token)
    /// downloads.
    pub fn new(transcriber: Arc<Transcriber>, graph: GraphClient) -> Self {
        Self { transcriber, graph }
    }

    /// The words of the voice note `media_id` (spoken in `language`, when known), or why
    /// there are none.
    ///
    /// # Errors
    /// What failed, in words: the download or the transcription.
    pub async fn transcribe(
        &self,
        media_id: &str,
        mime_type: Option<&str>,
        language: Option<&str>,
    ) -> Result<String, String> {
        let started = Instant::now();
        let outcome = match self.graph.download_media(media_id, MAX_AUDIO_BYTES).await {
            Err(error) => Err((format!("download_{}", error.label()), error.to_string())),
            Ok(media) => {
                let mime_type = media.mime_type.as_deref().or(mime_type);
                self.transcriber
                    .transcribe(media.bytes, mime_type, language)
                    .await
                    .map_err(|error| (error.label().to_owned(), error.to_string()))
            }
        };
        ::metrics::histogram!(metrics::TRANSCRIPTION_SECONDS)
            .record(started.elapsed().as_secs_f64());
        let label = outcome
            .as_ref()
            .map_or_else(|(label, _)| label.clone(), |_| "ok".to_owned());
        ::metrics::counter!(metrics::TRANSCRIPTIONS, "outcome" => label).increment(1);
        outcome.map_err(|(_, error)| error)
    }
}
