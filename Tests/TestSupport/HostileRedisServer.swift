import Foundation
import Synchronization

/// A fake Redis, in Python, that answers the handshake and then answers every command with a
/// hostile stream, until the client hangs up:
/// - `attributes`: RESP3 attribute frames, one after the other, without end;
/// - `hugeBulk`: a bulk string header declaring 2 GiB, then bytes without end;
/// - `endlessArray`: an array declaring 16 million elements, then small elements without end.
///
/// Or (``startSilentSubscriber()``) one that confirms a subscription to `ch` and then never
/// answers again, as a peer gone without a FIN would; it counts the connections it accepted.
public final class HostileRedisServer: Sendable {
    /// What the server sends after the handshake.
    public enum Mode: String, Sendable, CaseIterable {
        case attributes, hugeBulk, endlessArray
    }

    /// The port it listens on (127.0.0.1).
    public let port: Int
    private let process: Process

    private static let script = #"""
        import socket, sys, threading
        mode = sys.argv[1]
        streams = {
            "attributes": (b"", b"|1\r\n+k\r\n+v\r\n" * 8192),
            "hugeBulk": (b"$2147483648\r\n", b"x" * 65536),
            "endlessArray": (b"*16000000\r\n", b"+x\r\n" * 16384),
            "silentSubscriber": (b">3\r\n$9\r\nsubscribe\r\n$2\r\nch\r\n:1\r\n", b""),
        }
        head, chunk = streams.get(mode, (b"", b""))
        accepted = 0
        server = socket.socket()
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", 0))
        server.listen(16)
        print(server.getsockname()[1], flush=True)
        def lie(connection):
            # A sentinel that names 127.0.0.1:<port> as the master, whatever is asked.
            target = mode.split(":")[1].encode()
            try:
                connection.recv(65536)              # HELLO 3
                connection.sendall(b"%0\r\n")
                while connection.recv(65536):
                    connection.sendall(b"*2\r\n$9\r\n127.0.0.1\r\n$%d\r\n%s\r\n" % (len(target), target))
            except OSError:
                pass
            finally:
                connection.close()
        def serve(connection):
            if mode.startswith("sentinel:"):
                return lie(connection)
            try:
                connection.recv(65536)              # HELLO 3
                connection.sendall(b"%0\r\n")       # an empty map: RESP3, no more to say
                connection.recv(65536)              # the command
                connection.sendall(head)
                while chunk:
                    connection.sendall(chunk)
                while connection.recv(65536):       # silent: reads, never answers
                    pass
            except OSError:
                pass
            finally:
                connection.close()
        while True:
            connection, _ = server.accept()
            accepted += 1
            print("accepted", accepted, flush=True)
            threading.Thread(target=serve, args=(connection,), daemon=True).start()
        """#

    private let output: FileHandle
    private let acceptedCount = Counter()

    private final class Counter: Sendable {
        let value = Mutex(0)
    }

    private init(port: Int, process: Process, output: FileHandle) {
        self.port = port
        self.process = process
        self.output = output
        // The script prints a line per accepted connection.
        output.readabilityHandler = { [acceptedCount] handle in
            let lines = String(decoding: handle.availableData, as: UTF8.self).split(separator: "\n")
            acceptedCount.value.withLock { $0 += lines.filter { $0.hasPrefix("accepted") }.count }
        }
    }

    /// Connections accepted so far.
    public var accepted: Int { acceptedCount.value.withLock { $0 } }

    /// Starts one in `mode` and waits until it listens.
    public static func start(_ mode: Mode) throws -> HostileRedisServer {
        try start(modeName: mode.rawValue)
    }

    /// Starts a sentinel that names `127.0.0.1:<port>` as the master of any name.
    public static func startSentinel(naming port: Int) throws -> HostileRedisServer {
        try start(modeName: "sentinel:\(port)")
    }

    /// Starts one that confirms a subscription to `ch`, then never answers again.
    public static func startSilentSubscriber() throws -> HostileRedisServer {
        try start(modeName: "silentSubscriber")
    }

    private static func start(modeName: String) throws -> HostileRedisServer {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3", "-c", script, modeName]
        let output = Pipe()
        process.standardOutput = output
        process.standardError = FileHandle.nullDevice
        try process.run()
        // The first line is the port.
        var line = Data()
        while let byte = try output.fileHandleForReading.read(upToCount: 1), let first = byte.first, first != UInt8(ascii: "\n") {
            line.append(first)
        }
        guard let port = Int(String(decoding: line, as: UTF8.self)) else {
            process.terminate()
            throw RedisFixtureError(message: "the hostile Redis did not start (python3 missing?)")
        }
        return HostileRedisServer(port: port, process: process, output: output.fileHandleForReading)
    }

    /// Stops it.
    public func stop() {
        output.readabilityHandler = nil
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
    }
}

/// This process's resident memory, in bytes (Linux `/proc/self/status`), or nil elsewhere.
public func residentMemoryBytes() -> Int? {
    guard let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8),
        let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmRSS:") }),
        let kilobytes = line.split(separator: " ").dropFirst().first.flatMap({ Int($0) })
    else { return nil }
    return kilobytes * 1024
}
