import Testing
import Utilities

@Suite("Backoff")
struct BackoffTests {
    @Test("doubles from the initial wait up to the maximum, spread by the jitter factor")
    func doubling() {
        let backoff = Backoff(initial: .milliseconds(100), maximum: .seconds(1))
        #expect(backoff.delay(afterFailures: 1, factor: 1) == .milliseconds(100))
        #expect(backoff.delay(afterFailures: 2, factor: 1) == .milliseconds(200))
        #expect(backoff.delay(afterFailures: 4, factor: 1) == .milliseconds(800))
        #expect(backoff.delay(afterFailures: 5, factor: 1) == .seconds(1))
        #expect(backoff.delay(afterFailures: 500, factor: 1) == .seconds(1), "no overflow after many failures")
        #expect(backoff.delay(afterFailures: 2, factor: 0.75) == .milliseconds(150))
        #expect(backoff.delay(afterFailures: 2, factor: 1.25) == .milliseconds(250))
    }

    @Test("next() counts failures and stays within the jitter; reset() starts over")
    func nextAndReset() {
        var backoff = Backoff(initial: .milliseconds(100), maximum: .seconds(10))
        let first = backoff.next()
        #expect(first >= .milliseconds(75) && first <= .milliseconds(125))
        _ = backoff.next()
        let third = backoff.next()
        #expect(third >= .milliseconds(300) && third <= .milliseconds(500))
        #expect(backoff.failures == 3)
        backoff.reset()
        #expect(backoff.failures == 0)
        let again = backoff.next()
        #expect(again >= .milliseconds(75) && again <= .milliseconds(125))
    }
}

@Suite("Duration units")
struct DurationUnitsTests {
    @Test("whole milliseconds truncate; rounded-up milliseconds never turn a positive duration into zero")
    func milliseconds() {
        #expect(Duration.microseconds(1500).wholeMilliseconds == 1)
        #expect(Duration.microseconds(1500).roundedUpMilliseconds == 2)
        #expect(Duration.microseconds(1).wholeMilliseconds == 0)
        #expect(Duration.microseconds(1).roundedUpMilliseconds == 1)
        #expect(Duration.seconds(3).roundedUpMilliseconds == 3000)
        #expect(Duration.zero.roundedUpMilliseconds == 0)
        #expect(Duration.milliseconds(1234).wholeNanoseconds == 1_234_000_000)
        #expect(Duration.milliseconds(1500).inSeconds == 1.5)
        #expect(Duration.microseconds(250).inMilliseconds == 0.25)
    }
}

@Suite("Percent-decoding")
struct PercentDecodingTests {
    @Test("escapes decode in either case; malformed ones fail strictly and stay as they are leniently")
    func decoding() {
        #expect(PercentDecoding.strict("4208203%7C3550308") == "4208203|3550308")
        #expect(PercentDecoding.strict("%e2%82%ac") == "€")
        #expect(PercentDecoding.strict("p%40ss%3Aword") == "p@ss:word")
        #expect(PercentDecoding.strict("plain") == "plain")
        #expect(PercentDecoding.strict("100%") == nil)
        #expect(PercentDecoding.strict("%4") == nil)
        #expect(PercentDecoding.strict("%zz") == nil)
        #expect(PercentDecoding.lenient("100%") == "100%")
        #expect(PercentDecoding.lenient("%zz%7C") == "%zz|")
        #expect(PercentDecoding.lenient("a%7") == "a%7")
        #expect(PercentDecoding.strict("%FF") == nil, "not UTF-8")
        #expect(PercentDecoding.lenient("k%FF") == "k%FF", "not UTF-8: left as it came")
    }
}
