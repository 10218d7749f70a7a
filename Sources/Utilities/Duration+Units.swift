extension Duration {
    /// Whole milliseconds, truncated toward zero: for time arithmetic on millisecond clocks.
    @inlinable package var wholeMilliseconds: Int64 {
        let (seconds, attoseconds) = components
        return seconds &* 1000 &+ attoseconds / 1_000_000_000_000_000
    }

    /// Milliseconds rounded up, so a positive duration never becomes zero: for limits sent to a
    /// server (`PX`, `PEXPIRE`) where zero means "none" or is refused.
    @inlinable package var roundedUpMilliseconds: Int64 {
        let (_, attoseconds) = components
        let remainder = attoseconds % 1_000_000_000_000_000
        return wholeMilliseconds &+ (remainder > 0 ? 1 : 0)
    }

    /// Whole nanoseconds, truncated.
    @inlinable package var wholeNanoseconds: Int64 {
        let (seconds, attoseconds) = components
        return seconds &* 1_000_000_000 &+ attoseconds / 1_000_000_000
    }

    /// The duration in seconds, as a floating-point number.
    @inlinable package var inSeconds: Double {
        let (seconds, attoseconds) = components
        return Double(seconds) + Double(attoseconds) / 1e18
    }

    /// The duration in milliseconds, as a floating-point number.
    @inlinable package var inMilliseconds: Double { inSeconds * 1000 }
}
