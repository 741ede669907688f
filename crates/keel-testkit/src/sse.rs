//! A Server-Sent Events reader for tests, written from the WHATWG HTML specification's
//! event-stream interpretation (fields `id`, `event`, `data`; lines starting with `:` are
//! comments; a blank line dispatches), over a real HTTP response.

use std::time::Duration;

/// One dispatched frame: an event, or a comment line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    Event {
        id: Option<String>,
        event: Option<String>,
        data: String,
    },
    Comment(String),
}

/// An open stream.
#[derive(Debug)]
pub struct SseStream {
    res: reqwest::Response,
    buf: String,
    /// How long one read may wait before the test fails (bounded in time).
    pub wait: Duration,
}

impl SseStream {
    /// Wraps a `200 text/event-stream` answer (panics otherwise, with the body).
    pub async fn open(res: reqwest::Response) -> Self {
        let status = res.status();
        let kind = res
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        if status != reqwest::StatusCode::OK || !kind.starts_with("text/event-stream") {
            let body = res.text().await.unwrap_or_default();
            panic!("expected an event stream, got {status} {kind}: {body}");
        }
        Self {
            res,
            buf: String::new(),
            wait: Duration::from_secs(30),
        }
    }

    /// The next frame; `None` when the server ended the stream.
    pub async fn frame(&mut self) -> Option<Frame> {
        self.frame_or_cut(false).await
    }

    /// The next event; `None` when the stream ended or was cut (its node died), after which
    /// a client resumes with `Last-Event-ID`.
    pub async fn event_or_cut(&mut self) -> Option<(String, String, serde_json::Value)> {
        self.next_event(true).await
    }

    /// The next event (`id`, `event`, data), skipping comments.
    async fn next_event(&mut self, cut_ends: bool) -> Option<(String, String, serde_json::Value)> {
        loop {
            if let Frame::Event { id, event, data } = self.frame_or_cut(cut_ends).await? {
                return Some((
                    id.unwrap_or_default(),
                    event.unwrap_or_else(|| "message".into()),
                    serde_json::from_str(&data).expect("event data is JSON"),
                ));
            }
        }
    }

    async fn frame_or_cut(&mut self, cut_ends: bool) -> Option<Frame> {
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                return Some(parse(&block));
            }
            let read = tokio::time::timeout(self.wait, self.res.chunk())
                .await
                .expect("the stream sends within the test's bound");
            let chunk = match read {
                Ok(chunk) => chunk?,
                Err(_) if cut_ends => return None,
                Err(e) => panic!("the stream stays readable: {e}"),
            };
            self.buf
                .push_str(std::str::from_utf8(&chunk).expect("an event stream is UTF-8"));
        }
    }

    /// The next event, skipping comments; `None` when the stream ended.
    pub async fn event(&mut self) -> Option<(String, String, serde_json::Value)> {
        self.next_event(false).await
    }
}

fn parse(block: &str) -> Frame {
    let (mut id, mut event, mut data, mut comment) = (None, None, Vec::new(), None);
    for line in block.lines() {
        if let Some(c) = line.strip_prefix(':') {
            comment = Some(c.trim_start().to_owned());
            continue;
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "id" => id = Some(value.to_owned()),
            "event" => event = Some(value.to_owned()),
            "data" => data.push(value.to_owned()),
            _ => {}
        }
    }
    match (comment, &id, &event, data.is_empty()) {
        (Some(c), None, None, true) => Frame::Comment(c),
        _ => Frame::Event {
            id,
            event,
            data: data.join("\n"),
        },
    }
}
