//! Every `/metricdata` parameter, once: the parser's list of known names and the OpenAPI
//! document's parameters (both dialects) are read from [`PARAMETERS`].

/// What a parameter's values look like, for the OpenAPI document (the parser checks them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// A time: epoch ms, a date and time, or relative to now.
    Time,
    /// A bucket width: seconds, or a number and a unit.
    Interval,
    /// An IP protocol: a number or a name.
    Protocol,
    /// An application protocol: the appliance's code or its name.
    ApplicationProtocol,
    /// `[A-Za-z0-9_.:-]`, at most this many characters.
    Token(usize),
    /// A positive integer id.
    Id,
    Port,
    Boolean,
    /// Metric names (each a [`Shape::Token`]), repeated or as a comma list.
    Metrics,
    /// Device ids (each a [`Shape::Id`]), repeated or as a comma list.
    Devices,
    /// `json` or `csv`.
    Format,
    /// An appliance's name.
    Appliance,
    /// Appliances' names, as a comma list.
    Appliances,
}

/// A documented example value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Example {
    Text(&'static str),
    Number(i64),
}

#[derive(Debug, Clone, Copy)]
pub struct Parameter {
    pub name: &'static str,
    pub shape: Shape,
    /// `/v1`'s description.
    pub doc: &'static str,
    /// `/darktrace`'s, where the SDK's spelling differs; `None` means the same as `/v1`.
    pub sdk_doc: Option<&'static str>,
    /// Present on `/darktrace` (the SDK route has no `format`).
    pub in_sdk: bool,
    /// Examples are given only where, all together, they form one valid request: Swagger UI
    /// sends every example at once.
    pub example: Option<Example>,
}

const fn p(name: &'static str, shape: Shape, doc: &'static str) -> Parameter {
    Parameter {
        name,
        shape,
        doc,
        sdk_doc: None,
        in_sdk: true,
        example: None,
    }
}

impl Parameter {
    const fn sdk(mut self, doc: &'static str) -> Self {
        self.sdk_doc = Some(doc);
        self
    }

    const fn example(mut self, example: Example) -> Self {
        self.example = Some(example);
        self
    }

    const fn gateway_only(mut self) -> Self {
        self.in_sdk = false;
        self
    }
}

pub const PARAMETERS: &[Parameter] = &[
    p(
        "metric",
        Shape::Token(64),
        "One metric name (see `GET /v1/metrics`). `metric` or `metrics` is required, not both; given once (for several metrics, use `metrics`). Any parameter given empty (`metrics=`) counts as absent.",
    )
    .sdk("One metric name, or several joined by commas (darktrace-sdk 0.9); `metric` or `metrics` is required, not both. Any parameter given empty counts as absent. darktrace-sdk 0.10 sends several as `metric1=`, `metric2=`, …, which are accepted too.")
    .example(Example::Text("connections")),
    p(
        "metrics",
        Shape::Metrics,
        "Several metric names: a comma list (`a,b`, or `[a,b]`) or `metrics=` repeated. Sorted and deduplicated. Mutually exclusive with `metric`.",
    ),
    p("did", Shape::Id, "One device id. Mutually exclusive with `devices`; given once (for several devices, use `devices`).")
        .example(Example::Number(1)),
    p("ddid", Shape::Id, "Destination device id."),
    p("odid", Shape::Id, "Other device id."),
    p("port", Shape::Port, "Port (source or destination)."),
    p("sourceport", Shape::Port, "Source port."),
    p("destinationport", Shape::Port, "Destination port."),
    p(
        "protocol",
        Shape::Protocol,
        "IP protocol: a name (`tcp`, `udp`, `icmp`, …) or a number 0–255.",
    ),
    p(
        "applicationprotocol",
        Shape::ApplicationProtocol,
        "Application protocol: the appliance's numeric code from its `/enums` (e.g. `1053`), or the protocol's name there in any case (`http`, `https`, `smtp`, …), which the gateway translates to the code. Unknown names are refused with the closest known ones; names are accepted once the gateway has read the appliance's `/enums` (codes always are).",
    ),
    p(
        "starttime",
        Shape::Time,
        "Start: epoch ms, ISO-8601 (`2024-01-15T12:00:00Z`), `YYYY-MM-DD HH:MM:SS` (UTC) between March 1973 and 9999, or relative to now (`now-1h`, `now-30min`, `now-7d`). Alias: `from` (give one of the two). Without an end, the range runs until now; without a start, the appliance's recent window is asked for. The first bucket is the one holding the start (buckets start at epoch-aligned multiples of the interval).",
    ),
    p(
        "endtime",
        Shape::Time,
        "End: the forms `starttime` takes. Alias: `to` (give one of the two). Without an end, the range runs until now.",
    ),
    p("from", Shape::Time, "Alias of `starttime`; give one of the two.")
        .sdk("Alias of `starttime` (the SDK's `from_`).")
        .example(Example::Text("now-1h")),
    p("to", Shape::Time, "Alias of `endtime`; give one of the two."),
    p(
        "interval",
        Shape::Interval,
        "Bucket width: seconds (`300`) or a label (`1min`, `5min`, `15min`, `1hour`, `1day`), a whole number of minutes (appliances keep one value per minute). Default 60 seconds. Each bucket holds the maximum value inside it.",
    )
    .example(Example::Text("5min")),
    p(
        "breachtimes",
        Shape::Boolean,
        "Include model breach times (`true`/`false`/`1`/`0`).",
    )
    .sdk("Include model breach times: `True`/`False` (as Python writes them), `true`/`false`, `1`/`0`."),
    p(
        "fulldevicedetails",
        Shape::Boolean,
        "Include full device details (`true`/`false`/`1`/`0`).",
    ),
    p(
        "devices",
        Shape::Devices,
        "Several numeric device ids: a comma list (`123,456`, or `[123,456]`) or `devices=` repeated; each is its own appliance request. Mutually exclusive with `did`.",
    )
    .sdk("Several device ids: comma-joined (darktrace-sdk 0.9) or repeated (0.10). Mutually exclusive with `did`."),
    p(
        "format",
        Shape::Format,
        "`json` (default) or `csv`: one row per point, `timestamp_iso,timestamp_ms,metric,did,value,in,out`. `Accept: text/csv` does the same.",
    )
    .gateway_only(),
    p(
        "appliance",
        Shape::Appliance,
        "The appliance to ask, by name (see `GET /v1/appliances`); the default appliance when omitted. Device ids and metric catalogs are each appliance's own.",
    )
    .gateway_only(),
    p(
        "appliances",
        Shape::Appliances,
        "Several appliances (`emea,amer`, or the parameter repeated; a name twice counts once) asked the same question at once, each through its own caches and budget; each series (and breach) says which it came from in `appliance`, and CSV gets an `appliance` column after `timestamp_ms`. An appliance that fails leaves the others' series, with a `Warning: 199 metricgate \"appliance <name>: <reason>\"` header and a `warnings` entry naming it, and `Cache-Control: no-store`; when all fail, the first failure's problem. Not with `appliance` (a 400 naming both); an unknown name is a 400 naming the choices.",
    )
    .gateway_only(),
];

/// Parameters that pick appliances (read by the HTTP layer): not part of the question.
pub const ROUTING: [&str; 2] = ["appliance", "appliances"];

/// The parameter named `name`, as `/v1` knows it.
pub fn known(name: &str) -> Option<&'static Parameter> {
    PARAMETERS.iter().find(|p| p.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::query::{AnyMetric, Dialect, parse_in};
    use crate::settings::Settings;

    #[test]
    fn the_parser_knows_every_listed_parameter_and_no_other() {
        let limits = Settings::defaults().query;
        for p in PARAMETERS {
            for dialect in [Dialect::Gateway, Dialect::Sdk, Dialect::Appliance] {
                let raw = format!("{}=%00", p.name);
                let errors = parse_in(dialect, &raw, &limits, &AnyMetric, 0).unwrap_err();
                let unknown = errors
                    .iter()
                    .any(|e| e.message.contains("unknown parameter"));
                assert!(!unknown, "{dialect:?} does not know `{}`", p.name);
            }
        }
        let errors = parse_in(Dialect::Gateway, "nosuch=1", &limits, &AnyMetric, 0).unwrap_err();
        assert!(errors[0].message.contains("unknown parameter"));
    }
}
