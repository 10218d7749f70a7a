import Foundation
public import Logging
import Synchronization

/// `LOG_FORMAT=json`: one JSON object per line (timestamp, level, label, message, metadata,
/// source), for log collectors. Every string is escaped by `JSONSerialization`, so a message or
/// a metadata value carrying quotes or newlines (an upstream's error text) stays one line.
public struct JSONLogHandler: LogHandler {
    /// The handler's level.
    public var logLevel: Logger.Level = .info
    /// Metadata added to every line.
    public var metadata: Logger.Metadata = [:]
    private let label: String
    private let write: @Sendable (String) -> Void

    /// A handler for `label` writing each line (with its newline) through `write`; by default to
    /// standard error.
    public init(label: String, write: (@Sendable (String) -> Void)? = nil) {
        self.label = label
        // A failed write (standard error closed) loses the line, not the process.
        self.write = write ?? { try? FileHandle.standardError.write(contentsOf: Data($0.utf8)) }
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        var object: [String: Any] = [
            "timestamp": Self.timestamp(), "level": event.level.rawValue, "label": label, "message": event.message.description,
            "source": event.source,
        ]
        let merged = metadata.merging(event.metadata ?? [:]) { _, new in new }
        if !merged.isEmpty { object["metadata"] = merged.mapValues(Self.plain) }
        guard let data = try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes]) else { return }
        // One line at a time, whatever the length, from every logger of the process.
        Self.lines.withLock { _ in write(String(decoding: data, as: UTF8.self) + "\n") }
    }

    /// A metadata value as JSON: strings, arrays and objects as themselves.
    private static func plain(_ value: Logger.Metadata.Value) -> Any {
        switch value {
        case .string(let text): text
        case .stringConvertible(let convertible): convertible.description
        case .array(let values): values.map(plain)
        case .dictionary(let values): values.mapValues(plain)
        }
    }

    private static let lines = Mutex(())

    /// Now, as ISO 8601 with milliseconds, in UTC.
    private static func timestamp() -> String {
        Date().formatted(.iso8601.year().month().day().timeZone(separator: .omitted).time(includingFractionalSeconds: true).timeSeparator(.colon))
    }
}
