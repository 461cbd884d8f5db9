//! Conversions between the host's domain types (`stockpipe_model`) and the WIT records.

use super::bindings::{enrich, route, types};
use stockpipe_model as model;

pub fn tick_to_wit(t: &model::Tick) -> types::Tick {
    let level = |l: &model::DepthLevel| types::DepthLevel {
        price: l.price,
        orders: l.orders,
        quantity: l.quantity,
    };
    types::Tick {
        timestamp_us: t.timestamp_us,
        instrument_token: t.instrument_token,
        last_price: t.last_price,
        volume: t.volume,
        sell_quantity: t.sell_quantity,
        last_quantity: t.last_quantity,
        change: t.change,
        average_price: t.average_price,
        open: t.open,
        high: t.high,
        low: t.low,
        close: t.close,
        depth_buy: t.depth_buy.iter().map(level).collect(),
        depth_sell: t.depth_sell.iter().map(level).collect(),
    }
}

pub fn rejection_from_wit(r: types::Rejection) -> model::Rejection {
    use types::ReasonCode as W;
    let code = match r.code {
        W::NotFinite => model::ReasonCode::NotFinite,
        W::NonPositivePrice => model::ReasonCode::NonPositivePrice,
        W::NegativeQuantity => model::ReasonCode::NegativeQuantity,
        W::InvertedRange => model::ReasonCode::InvertedRange,
        W::UnsortedBook => model::ReasonCode::UnsortedBook,
        W::CrossedBook => model::ReasonCode::CrossedBook,
        W::BadTimestamp => model::ReasonCode::BadTimestamp,
        W::Other => model::ReasonCode::Other,
    };
    model::Rejection {
        code,
        message: r.message,
    }
}

pub fn enrichment_from_wit(e: enrich::Enrichment) -> model::Enrichment {
    model::Enrichment {
        event_id: e.event_id,
        mid_price: e.mid_price,
        spread: e.spread,
        spread_bps: e.spread_bps,
        book_imbalance: e.book_imbalance,
        notional: e.notional,
        deviation_bps: e.deviation_bps,
        hour: e.hour,
        minute: e.minute,
    }
}

pub fn destinations_from_wit(d: route::Destinations) -> stockpipe_guest_route::logic::Destinations {
    stockpipe_guest_route::logic::Destinations {
        search_index: d.search_index,
        lake_partition: d.lake_partition,
        alert: d.alert.map(|a| stockpipe_guest_route::logic::Alert {
            topic: a.topic,
            reason: a.reason,
        }),
        dead_letter_topic: d.dead_letter_topic,
    }
}

pub fn route_input_to_wit(i: &stockpipe_guest_route::logic::RouteInput) -> route::RouteInput {
    route::RouteInput {
        timestamp_us: i.timestamp_us,
        instrument_token: i.instrument_token,
        change: i.change,
        spread_bps: i.spread_bps,
        rejected: i.rejected,
    }
}
