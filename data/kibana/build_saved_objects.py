#!/usr/bin/env python3
"""Writes stockpipe.ndjson, the Kibana saved objects of the stockpipe dashboard (Kibana 8.x).

Data views: stock-stream* (ticks), stock-forecast* (ARIMA forecasts), stockpipe-metrics* (the host's
counters every 10 s), stock-bars* (the aggregate stage's closed bars), stock-alerts* (the alert stage's
events). Visualizations are Vega-Lite specs that query Elasticsearch with the
dashboard's time range and filters (%context%, %timefield%) — but for the forecasts, which are
bounded by the time range from below only (they lie ahead of now). Run after editing: python3 build_saved_objects.py
`stockpipe kibana import` sends the file (embedded in the binary) to Kibana's saved objects API.
"""
import json
from pathlib import Path

VERSION = "8.15.3"

def data_view(id_, title, time_field, name):
    return {"type": "index-pattern", "id": id_, "managed": False, "coreMigrationVersion": "8.8.0",
            "typeMigrationVersion": "8.0.0", "references": [],
            "attributes": {"title": title, "timeFieldName": time_field, "name": name,
                           "fieldFormatMap": "{}", "runtimeFieldMap": "{}", "sourceFilters": "[]"}}

def es_data(index, time_field, aggs, buckets_path, query=None):
    body = {"size": 0, "aggs": aggs}
    if query:
        body["query"] = query
    return {"url": {"%context%": True, "%timefield%": time_field, "index": index, "body": body},
            "format": {"property": buckets_path}}

def histogram(field, sub):
    return {"date_histogram": {"field": field, "interval": {"%autointerval%": True},
                               "extended_bounds": {"min": {"%timefilter%": "min"}, "max": {"%timefilter%": "max"}},
                               "min_doc_count": 0},
            "aggs": sub}

def per_instrument_line(title, metric, field, y_title, top=10):
    """One line per instrument (the `top` most active) of `metric`(`field`) over time."""
    return {
        "$schema": "https://vega.github.io/schema/vega-lite/v5.json",
        "title": title,
        "data": es_data("stock-stream*", "timestamp",
                        {"instruments": {"terms": {"field": "instrument_token", "size": top},
                                         "aggs": {"t": histogram("timestamp", {"v": {metric: {"field": field}}})}}},
                        "aggregations.instruments.buckets"),
        "transform": [{"flatten": ["t.buckets"], "as": ["b"]},
                      {"calculate": "datum.b.key", "as": "time"},
                      {"calculate": "datum.b.v.value", "as": "value"},
                      {"filter": "datum.value != null"}],
        "mark": {"type": "line", "point": False},
        "encoding": {"x": {"field": "time", "type": "temporal", "title": None},
                     "y": {"field": "value", "type": "quantitative", "scale": {"zero": False}, "title": y_title},
                     "color": {"field": "key", "type": "nominal", "title": "instrument"}},
    }

def over_time(title, index, time_field, metrics, y_title, path="aggregations.t.buckets"):
    """Lines of several metrics of one index over time: metrics = [(label, agg)]."""
    sub = {f"m{i}": agg for i, (_, agg) in enumerate(metrics)}
    calcs = [{"calculate": f"datum.m{i}.value", "as": label} for i, (label, _) in enumerate(metrics)]
    return {
        "$schema": "https://vega.github.io/schema/vega-lite/v5.json",
        "title": title,
        "data": es_data(index, time_field, {"t": histogram(time_field, sub)}, path),
        "transform": [{"calculate": "datum.key", "as": "time"}, *calcs,
                      {"fold": [label for label, _ in metrics], "as": ["series", "value"]},
                      {"filter": "datum.value != null"}],
        "mark": "line",
        "encoding": {"x": {"field": "time", "type": "temporal", "title": None},
                     "y": {"field": "value", "type": "quantitative", "title": y_title},
                     "color": {"field": "series", "type": "nominal", "title": None}},
    }

def rates():
    spec = over_time("Refused and dead-lettered (share of consumed ticks)", "stockpipe-metrics*", "timestamp",
                     [("consumed", {"sum": {"field": "consumed"}}), ("rejected", {"sum": {"field": "rejected"}}),
                      ("dead_lettered", {"sum": {"field": "dead_lettered"}})], "share of consumed")
    spec["transform"] = [{"calculate": "datum.key", "as": "time"},
                         {"calculate": "datum.m0.value", "as": "consumed"},
                         {"filter": "datum.consumed > 0"},
                         {"calculate": "datum.m1.value / datum.consumed", "as": "refused"},
                         {"calculate": "datum.m2.value / datum.consumed", "as": "dead-lettered"},
                         {"fold": ["refused", "dead-lettered"], "as": ["series", "value"]}]
    spec["encoding"]["y"]["axis"] = {"format": "%"}
    return spec

def forecast_vs_actual():
    """Actual last price (stock-stream*) and the forecasts with their interval (stock-forecast*), per
    instrument; filter the dashboard on one instrument_token to read it alone."""
    actual = es_data("stock-stream*", "timestamp",
                     {"instruments": {"terms": {"field": "instrument_token", "size": 5},
                                      "aggs": {"t": histogram("timestamp", {"v": {"avg": {"field": "last_price"}}})}}},
                     "aggregations.instruments.buckets")
    # Forecasts lie ahead of now: the time picker bounds them from below only (with %timefield%
    # Kibana would add its upper bound, `now`, and drop every forecast still to come). A body query
    # rules out %context%, so the dashboard's query and filters come in clause by clause.
    since_start = {"range": {"forecast_timestamp": {"gte": {"%timefilter%": "min"}, "format": "epoch_millis"}}}
    forecast = {"url": {"index": "stock-forecast*",
                        "body": {"size": 500, "_source": ["instrument_token", "forecast_timestamp", "forecast_value",
                                                          "prediction_interval_lower_bound",
                                                          "prediction_interval_upper_bound"],
                                 "query": {"bool": {"must": ["%dashboard_context-must_clause%"],
                                                    "filter": ["%dashboard_context-filter_clause%", since_start],
                                                    "must_not": ["%dashboard_context-must_not_clause%"]}},
                                 "sort": [{"forecast_timestamp": "asc"}]}},
                "format": {"property": "hits.hits"}}
    x = {"field": "time", "type": "temporal", "title": None}
    return {
        "$schema": "https://vega.github.io/schema/vega-lite/v5.json",
        "title": "Forecast (ARIMA) beside the actual last price",
        "layer": [
            {"data": actual,
             "transform": [{"flatten": ["t.buckets"], "as": ["b"]}, {"calculate": "datum.b.key", "as": "time"},
                           {"calculate": "datum.b.v.value", "as": "price"}, {"filter": "datum.price != null"},
                           {"calculate": "'' + datum.key", "as": "instrument"}],
             "mark": "line",
             "encoding": {"x": x, "y": {"field": "price", "type": "quantitative", "scale": {"zero": False},
                                        "title": "last price"},
                          "color": {"field": "instrument", "type": "nominal"}}},
            {"data": forecast,
             "transform": [{"calculate": "toDate(datum._source.forecast_timestamp)", "as": "time"},
                           {"calculate": "datum._source.forecast_value", "as": "price"},
                           {"calculate": "datum._source.prediction_interval_lower_bound", "as": "lower"},
                           {"calculate": "datum._source.prediction_interval_upper_bound", "as": "upper"},
                           {"calculate": "'' + datum._source.instrument_token", "as": "instrument"}],
             "layer": [
                 {"mark": {"type": "area", "opacity": 0.2},
                  "encoding": {"x": x, "y": {"field": "lower", "type": "quantitative"}, "y2": {"field": "upper"},
                               "color": {"field": "instrument", "type": "nominal"}}},
                 {"mark": {"type": "line", "strokeDash": [6, 4]},
                  "encoding": {"x": x, "y": {"field": "price", "type": "quantitative"},
                               "color": {"field": "instrument", "type": "nominal"}}},
             ]},
        ],
    }

def bars():
    """Candlesticks of the aggregate stage's closed bars (stock-bars*): a rule from low to high and a
    bar from open to close, green when the close is at or above the open. Every instrument's bars
    share the axes: filter the dashboard on one instrument_token to read one."""
    data = {"url": {"%context%": True, "%timefield%": "bar_start", "index": "stock-bars*",
                    "body": {"size": 1000, "_source": ["instrument_token", "bar_start", "open", "high", "low",
                                                       "close", "traded_quantity"],
                             "sort": [{"bar_start": "asc"}]}},
            "format": {"property": "hits.hits"}}
    x = {"field": "time", "type": "temporal", "title": None}
    color = {"condition": {"test": "datum.close >= datum.open", "value": "#2ca02c"}, "value": "#d62728"}
    return {
        "$schema": "https://vega.github.io/schema/vega-lite/v5.json",
        "title": "Bars (filter on one instrument_token)",
        "data": data,
        "transform": [{"calculate": "toDate(datum._source.bar_start)", "as": "time"},
                      {"calculate": "datum._source.open", "as": "open"},
                      {"calculate": "datum._source.high", "as": "high"},
                      {"calculate": "datum._source.low", "as": "low"},
                      {"calculate": "datum._source.close", "as": "close"}],
        "encoding": {"x": x, "color": color},
        "layer": [
            {"mark": "rule",
             "encoding": {"y": {"field": "low", "type": "quantitative", "scale": {"zero": False}, "title": "price"},
                          "y2": {"field": "high"}}},
            {"mark": {"type": "bar", "size": 4},
             "encoding": {"y": {"field": "open", "type": "quantitative"}, "y2": {"field": "close"}}},
        ],
    }

def alerts():
    """The alert stage's events (stock-alerts*), newest 500 in the time range: one point per event at
    its time, a row per rule, filled when firing and hollow when resolved; the tooltip names the
    instrument, the value and the level it crossed."""
    data = {"url": {"%context%": True, "%timefield%": "event_time", "index": "stock-alerts*",
                    "body": {"size": 500, "_source": ["event_time", "rule", "state", "instrument_token",
                                                      "value", "threshold"],
                             "sort": [{"event_time": "desc"}]}},
            "format": {"property": "hits.hits"}}
    return {
        "$schema": "https://vega.github.io/schema/vega-lite/v5.json",
        "title": "Alerts: firing (filled) and resolved (hollow), per rule",
        "data": data,
        "transform": [{"calculate": "toDate(datum._source.event_time)", "as": "time"},
                      {"calculate": "datum._source.rule", "as": "rule"},
                      {"calculate": "datum._source.state", "as": "state"},
                      {"calculate": "datum._source.instrument_token", "as": "instrument"},
                      {"calculate": "datum._source.value", "as": "value"},
                      {"calculate": "datum._source.threshold", "as": "level"}],
        "mark": {"type": "point", "size": 60},
        "encoding": {"x": {"field": "time", "type": "temporal", "title": None},
                     "y": {"field": "rule", "type": "nominal", "title": None},
                     "color": {"field": "instrument", "type": "nominal", "legend": None},
                     "fill": {"condition": {"test": "datum.state == 'firing'", "field": "instrument",
                                            "type": "nominal"}, "value": "transparent"},
                     "tooltip": [{"field": "time", "type": "temporal"}, {"field": "rule"}, {"field": "state"},
                                 {"field": "instrument"}, {"field": "value"}, {"field": "level"}]},
    }

VISUALIZATIONS = [
    ("stockpipe-last-price", "Last price per instrument",
     per_instrument_line("Last price per instrument", "avg", "last_price", "last price")),
    ("stockpipe-volume", "Traded quantity per instrument",
     per_instrument_line("Traded quantity per instrument (sum of last_quantity)", "sum", "last_quantity", "quantity")),
    ("stockpipe-spread", "Spread (bps)",
     per_instrument_line("Bid-ask spread per instrument", "avg", "spread_bps", "spread (bps)")),
    ("stockpipe-imbalance", "Order-book imbalance",
     per_instrument_line("Order-book imbalance per instrument ((bid - ask) / (bid + ask) quantity)", "avg",
                         "book_imbalance", "imbalance")),
    ("stockpipe-rejects", "Refused and dead-lettered rate", rates()),
    ("stockpipe-forecast", "Forecast vs actual", forecast_vs_actual()),
    ("stockpipe-bars", "Bars (candlesticks)", bars()),
    ("stockpipe-alerts", "Alerts (firing and resolved)", alerts()),
]

def visualization(id_, title, spec):
    vis_state = {"title": title, "type": "vega", "aggs": [],
                 "params": {"spec": json.dumps(spec, indent=2)}}
    return {"type": "visualization", "id": id_, "managed": False, "coreMigrationVersion": "8.8.0",
            "typeMigrationVersion": "8.5.0", "references": [],
            "attributes": {"title": title, "description": "", "uiStateJSON": "{}", "version": 1,
                           "visState": json.dumps(vis_state),
                           "kibanaSavedObjectMeta": {"searchSourceJSON": json.dumps({"query": {"query": "", "language": "kuery"}, "filter": []})}}}

def dashboard():
    panels, references = [], []
    for i, (id_, _, _) in enumerate(VISUALIZATIONS):
        ref = f"panel_{i}"
        panels.append({"type": "visualization", "panelRefName": ref, "panelIndex": str(i), "embeddableConfig": {},
                       "gridData": {"x": 24 * (i % 2), "y": 15 * (i // 2), "w": 24, "h": 15, "i": str(i)}})
        references.append({"type": "visualization", "id": id_, "name": ref})
    return {"type": "dashboard", "id": "stockpipe", "managed": False, "coreMigrationVersion": "8.8.0",
            "typeMigrationVersion": "8.9.0", "references": references,
            "attributes": {"title": "stockpipe", "description": "Ticks, spreads, order books, refusals, bars, alerts and forecasts",
                           "timeRestore": True, "timeFrom": "now-1h", "timeTo": "now",
                           "refreshInterval": {"pause": False, "value": 10000},
                           "optionsJSON": json.dumps({"useMargins": True, "syncColors": True, "hidePanelTitles": False}),
                           "panelsJSON": json.dumps(panels), "version": 1,
                           "kibanaSavedObjectMeta": {"searchSourceJSON": json.dumps({"query": {"query": "", "language": "kuery"}, "filter": []})}}}

objects = [
    data_view("stockpipe-stock-stream", "stock-stream*", "timestamp", "stock-stream (ticks)"),
    data_view("stockpipe-stock-forecast", "stock-forecast*", "forecast_timestamp", "stock-forecast (ARIMA)"),
    data_view("stockpipe-metrics", "stockpipe-metrics*", "timestamp", "stockpipe-metrics (host counters)"),
    data_view("stockpipe-stock-bars", "stock-bars*", "bar_start", "stock-bars (closed bars)"),
    data_view("stockpipe-stock-alerts", "stock-alerts*", "event_time", "stock-alerts (alert events)"),
    *(visualization(*v) for v in VISUALIZATIONS),
    dashboard(),
]
out = Path(__file__).with_name("stockpipe.ndjson")
out.write_text("".join(json.dumps(o, sort_keys=True) + "\n" for o in objects))
print(f"wrote {len(objects)} objects to {out}")
