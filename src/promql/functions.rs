//! Prometheus' functions of one float, by name: a new one is an entry in [`MATH`], as
//! Prometheus keeps them in a table in `functions.go`. Each keeps Go's `math` meaning.

/// A function applied to every value of an instant vector; the result loses its metric name.
#[derive(Debug, Clone, Copy)]
pub(crate) struct MathFn {
    pub name: &'static str,
    pub apply: fn(f64) -> f64,
}

impl PartialEq for MathFn {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}

/// `sgn`: -1, 1, or the value itself (0, -0, NaN), as Prometheus writes it.
fn sgn(v: f64) -> f64 {
    if v < 0.0 {
        -1.0
    } else if v > 0.0 {
        1.0
    } else {
        v
    }
}

const MATH: &[MathFn] = &[
    MathFn {
        name: "abs",
        apply: f64::abs,
    },
    MathFn {
        name: "ceil",
        apply: f64::ceil,
    },
    MathFn {
        name: "floor",
        apply: f64::floor,
    },
    MathFn {
        name: "exp",
        apply: f64::exp,
    },
    MathFn {
        name: "sqrt",
        apply: f64::sqrt,
    },
    MathFn {
        name: "ln",
        apply: f64::ln,
    },
    MathFn {
        name: "log2",
        apply: f64::log2,
    },
    MathFn {
        name: "log10",
        apply: f64::log10,
    },
    MathFn {
        name: "sgn",
        apply: sgn,
    },
    MathFn {
        name: "sin",
        apply: f64::sin,
    },
    MathFn {
        name: "cos",
        apply: f64::cos,
    },
    MathFn {
        name: "tan",
        apply: f64::tan,
    },
    MathFn {
        name: "asin",
        apply: f64::asin,
    },
    MathFn {
        name: "acos",
        apply: f64::acos,
    },
    MathFn {
        name: "atan",
        apply: f64::atan,
    },
    MathFn {
        name: "sinh",
        apply: f64::sinh,
    },
    MathFn {
        name: "cosh",
        apply: f64::cosh,
    },
    MathFn {
        name: "tanh",
        apply: f64::tanh,
    },
    MathFn {
        name: "asinh",
        apply: f64::asinh,
    },
    MathFn {
        name: "acosh",
        apply: f64::acosh,
    },
    MathFn {
        name: "atanh",
        apply: f64::atanh,
    },
    MathFn {
        name: "deg",
        apply: f64::to_degrees,
    },
    MathFn {
        name: "rad",
        apply: f64::to_radians,
    },
];

/// The function of one float called `name`, if PromQL has one.
pub(crate) fn math(name: &str) -> Option<MathFn> {
    MATH.iter().find(|f| f.name == name).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn functions_keep_prometheus_meaning_at_the_edges() {
        let f = |name: &str, v: f64| (math(name).unwrap().apply)(v);
        assert_eq!(f("sgn", -3.0), -1.0);
        assert!(f("sgn", f64::NAN).is_nan());
        assert!(f("sgn", -0.0).is_sign_negative());
        assert!(f("ln", -1.0).is_nan());
        assert_eq!(f("ln", 0.0), f64::NEG_INFINITY);
        assert_eq!(f("deg", std::f64::consts::PI), 180.0);
        assert_eq!(f("abs", f64::NEG_INFINITY), f64::INFINITY);
        assert!(math("rate").is_none());
    }
}
