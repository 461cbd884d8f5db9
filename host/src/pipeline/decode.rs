//! A batch's messages decoded straight into its columns ([`stockpipe_model::json`]: the tick
//! scanner, the thorough decoder for what it does not recognise), each message keeping the place
//! of its tick or the reason it did not decode.

use crate::source::group::Consumed;
use stockpipe_model::columns::TickColumns;
use stockpipe_model::json::{DecodeError, decode_into};

/// A batch's messages decoded straight into its columns: the ticks, in order, and for each
/// message its tick's index or the reason it did not decode.
pub(super) struct Decoded {
    pub(super) ticks: TickColumns,
    pub(super) slots: Vec<Result<usize, DecodeError>>,
}

pub(super) fn decode_batch(batch: &[Consumed], offset_minutes: i32) -> Decoded {
    // Five levels a side, the sample's depth: a deeper book only grows the level columns.
    let mut ticks = TickColumns::with_capacity(batch.len(), 5);
    let slots = batch
        .iter()
        .map(|m| decode_into(&m.payload, offset_minutes, &mut ticks).map(|()| ticks.len() - 1))
        .collect();
    Decoded { ticks, slots }
}
