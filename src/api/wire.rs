//! A request body that gives its budget permit back the moment the
//! connection takes the bytes to write them: from then on the call is on
//! its way to the server, and the budget's window counts it no longer.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::Stream;

use crate::budget::Permit;

/// One chunk, then the end; the permit is dropped with the chunk (or with
/// the body, when the request fails before the body is read).
pub(super) struct OnTheWire {
    body: Option<Bytes>,
    permit: Option<Permit>,
}

impl OnTheWire {
    pub(super) fn new(body: String, permit: Permit) -> OnTheWire {
        OnTheWire {
            body: Some(Bytes::from(body)),
            permit: Some(permit),
        }
    }
}

impl Stream for OnTheWire {
    type Item = Result<Bytes, std::convert::Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let chunk = self.body.take();
        // The connection writes the chunk in the same poll that takes it.
        drop(self.permit.take());
        Poll::Ready(chunk.map(Ok))
    }
}
