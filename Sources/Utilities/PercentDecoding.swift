/// `%XX` decoding of URL components, one implementation for every caller.
package enum PercentDecoding {
    /// Decodes `%XX` escapes; nil when an escape is malformed (`%`, `%4`, `%zz`) or the
    /// decoded bytes are not UTF-8 (`%FF`).
    package static func strict(_ text: some StringProtocol) -> String? {
        decode(text, lenient: false)
    }

    /// Decodes `%XX` escapes and leaves malformed ones as they are (`100%` stays `100%`); when
    /// the decoded bytes are not UTF-8, the text is returned as it came.
    package static func lenient(_ text: some StringProtocol) -> String {
        decode(text, lenient: true) ?? String(text)
    }

    private static func decode(_ text: some StringProtocol, lenient: Bool) -> String? {
        guard text.utf8.contains(UInt8(ascii: "%")) else { return String(text) }
        let bytes = Array(text.utf8)
        var out: [UInt8] = []
        out.reserveCapacity(bytes.count)
        var i = 0
        while i < bytes.count {
            if bytes[i] == UInt8(ascii: "%") {
                if i + 2 < bytes.count, let hi = hexValue(bytes[i + 1]), let lo = hexValue(bytes[i + 2]) {
                    out.append(hi << 4 | lo)
                    i += 3
                    continue
                }
                guard lenient else { return nil }
            }
            out.append(bytes[i])
            i += 1
        }
        return String(validating: out, as: UTF8.self)
    }

    private static func hexValue(_ b: UInt8) -> UInt8? {
        switch b {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): b - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): b - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): b - UInt8(ascii: "A") + 10
        default: nil
        }
    }
}
