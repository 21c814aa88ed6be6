//! CloudWatch metric units and storage resolution.

/// A CloudWatch metric unit: exactly the values the EMF specification accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[allow(missing_docs)]
pub enum Unit {
    Seconds,
    Microseconds,
    Milliseconds,
    Bytes,
    Kilobytes,
    Megabytes,
    Gigabytes,
    Terabytes,
    Bits,
    Kilobits,
    Megabits,
    Gigabits,
    Terabits,
    Percent,
    Count,
    BytesPerSecond,
    KilobytesPerSecond,
    MegabytesPerSecond,
    GigabytesPerSecond,
    TerabytesPerSecond,
    BitsPerSecond,
    KilobitsPerSecond,
    MegabitsPerSecond,
    GigabitsPerSecond,
    TerabitsPerSecond,
    CountPerSecond,
    None,
}

impl Unit {
    /// Every unit, in the order CloudWatch documents them.
    pub const ALL: [Unit; 27] = [
        Unit::Seconds,
        Unit::Microseconds,
        Unit::Milliseconds,
        Unit::Bytes,
        Unit::Kilobytes,
        Unit::Megabytes,
        Unit::Gigabytes,
        Unit::Terabytes,
        Unit::Bits,
        Unit::Kilobits,
        Unit::Megabits,
        Unit::Gigabits,
        Unit::Terabits,
        Unit::Percent,
        Unit::Count,
        Unit::BytesPerSecond,
        Unit::KilobytesPerSecond,
        Unit::MegabytesPerSecond,
        Unit::GigabytesPerSecond,
        Unit::TerabytesPerSecond,
        Unit::BitsPerSecond,
        Unit::KilobitsPerSecond,
        Unit::MegabitsPerSecond,
        Unit::GigabitsPerSecond,
        Unit::TerabitsPerSecond,
        Unit::CountPerSecond,
        Unit::None,
    ];

    /// The name EMF and CloudWatch use, e.g. `Count/Second`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Unit::Seconds => "Seconds",
            Unit::Microseconds => "Microseconds",
            Unit::Milliseconds => "Milliseconds",
            Unit::Bytes => "Bytes",
            Unit::Kilobytes => "Kilobytes",
            Unit::Megabytes => "Megabytes",
            Unit::Gigabytes => "Gigabytes",
            Unit::Terabytes => "Terabytes",
            Unit::Bits => "Bits",
            Unit::Kilobits => "Kilobits",
            Unit::Megabits => "Megabits",
            Unit::Gigabits => "Gigabits",
            Unit::Terabits => "Terabits",
            Unit::Percent => "Percent",
            Unit::Count => "Count",
            Unit::BytesPerSecond => "Bytes/Second",
            Unit::KilobytesPerSecond => "Kilobytes/Second",
            Unit::MegabytesPerSecond => "Megabytes/Second",
            Unit::GigabytesPerSecond => "Gigabytes/Second",
            Unit::TerabytesPerSecond => "Terabytes/Second",
            Unit::BitsPerSecond => "Bits/Second",
            Unit::KilobitsPerSecond => "Kilobits/Second",
            Unit::MegabitsPerSecond => "Megabits/Second",
            Unit::GigabitsPerSecond => "Gigabits/Second",
            Unit::TerabitsPerSecond => "Terabits/Second",
            Unit::CountPerSecond => "Count/Second",
            Unit::None => "None",
        }
    }

    /// Parses a CloudWatch unit name (`Count/Second`, `Milliseconds`, …).
    pub fn parse(name: &str) -> Option<Unit> {
        Unit::ALL.into_iter().find(|unit| unit.as_str() == name)
    }

    /// The CloudWatch unit for a `metrics` facade unit. Binary byte units map to CloudWatch's
    /// byte units (which CloudWatch treats as powers of 1024); `Nanoseconds` has no CloudWatch
    /// unit and gives `None`.
    pub fn from_facade(unit: metrics::Unit) -> Option<Unit> {
        use metrics::Unit as F;
        Some(match unit {
            F::Count => Unit::Count,
            F::Percent => Unit::Percent,
            F::Seconds => Unit::Seconds,
            F::Milliseconds => Unit::Milliseconds,
            F::Microseconds => Unit::Microseconds,
            F::Nanoseconds => return None,
            F::Tebibytes => Unit::Terabytes,
            F::Gibibytes => Unit::Gigabytes,
            F::Mebibytes => Unit::Megabytes,
            F::Kibibytes => Unit::Kilobytes,
            F::Bytes => Unit::Bytes,
            F::TerabitsPerSecond => Unit::TerabitsPerSecond,
            F::GigabitsPerSecond => Unit::GigabitsPerSecond,
            F::MegabitsPerSecond => Unit::MegabitsPerSecond,
            F::KilobitsPerSecond => Unit::KilobitsPerSecond,
            F::BitsPerSecond => Unit::BitsPerSecond,
            F::CountPerSecond => Unit::CountPerSecond,
        })
    }
}

/// How finely CloudWatch stores a metric.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Resolution {
    /// One-minute resolution (`StorageResolution: 60`, the default).
    #[default]
    Standard,
    /// One-second resolution (`StorageResolution: 1`), billed as a high-resolution metric.
    High,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for unit in Unit::ALL {
            assert_eq!(Unit::parse(unit.as_str()), Some(unit));
        }
        assert_eq!(Unit::parse("Nanoseconds"), None);
        assert_eq!(Unit::from_facade(metrics::Unit::Nanoseconds), None);
        assert_eq!(Unit::from_facade(metrics::Unit::Mebibytes), Some(Unit::Megabytes));
    }
}
