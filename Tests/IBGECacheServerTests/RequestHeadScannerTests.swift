import NIOCore
import Testing

@testable import IBGECacheServer

/// The fast path's reading of request heads must frame every request exactly as NIO's decoder
/// does, or hand the connection to it.
@Suite("RequestHeadScanner: request heads read from the bytes")
struct RequestHeadScannerTests {
    let scanner = RequestHeadScanner(maximumTargetBytes: 8192, maximumFields: 100, maximumFieldBytes: 16 * 1024, maximumHeadBytes: 32 * 1024)

    func scan(_ text: String) -> RequestHeadScanner.Outcome {
        scanner.scan(ByteBuffer(string: text), from: 0)
    }

    func head(_ text: String, sourceLocation: SourceLocation = #_sourceLocation) throws -> RequestHeadScanner.Head {
        guard case .head(let head) = scan(text) else {
            Issue.record("not a head: \(text.debugDescription)", sourceLocation: sourceLocation)
            throw CancellationError()
        }
        return head
    }

    func isUnframed(_ text: String) -> Bool {
        if case .unframed = scan(text) { return true }
        return false
    }

    @Test("a plain GET: its length, target and the fields the fast path reads")
    func plainGet() throws {
        let text = "GET /api/v1/localidades/estados?orderBy=nome HTTP/1.1\r\nHost: x\r\nAccept-Encoding:  gzip, br \r\nIF-NONE-MATCH: \"ab\"\r\n\r\nGET /next"
        let head = try head(text)
        #expect(head.length == text.utf8.count - "GET /next".utf8.count)
        #expect(head.eligible && head.keepsConnection && !head.isHead)
        #expect(head.target == "/api/v1/localidades/estados?orderBy=nome")
        #expect(head.acceptEncoding == "gzip, br" && head.ifNoneMatch == "\"ab\"")
        #expect(try self.head("HEAD / HTTP/1.1\r\n\r\n").isHead)
    }

    @Test("a head not all here is incomplete, and the search resumes where it stopped")
    func incomplete() {
        guard case .incomplete(let scanned) = scan("GET / HTTP/1.1\r\nHost: x\r\n\r") else {
            Issue.record("expected incomplete")
            return
        }
        #expect(scanned == 26)
        var buffer = ByteBuffer(string: "GET / HTTP/1.1\r\nHost: x\r\n\r")
        buffer.writeString("\n")
        guard case .head(let head) = scanner.scan(buffer, from: scanned) else {
            Issue.record("expected a head once the last byte came")
            return
        }
        #expect(head.length == 27)
    }

    @Test("anything the decoder might frame differently hands the connection over")
    func unframed() {
        for text in [
            "POST /x HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}",
            "GET /x HTTP/1.1\r\ncontent-length: 0\r\n\r\n",
            "GET /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            "GET /x HTTP/1.1\nHost: x\n\n",  // bare LF
            "GET /x HTTP/1.1\r\nHost: x\rY: 1\r\n\r\n",  // bare CR
            "GET /x HTTP/1.1\r\nHost : x\r\n\r\n",  // space before the colon
            "GET /x HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n",  // obs-fold
            "\r\nGET /x HTTP/1.1\r\n\r\n",  // leading empty line
            "GET /x HTTP/2.0\r\n\r\n",
            "GET /x y HTTP/1.1\r\n\r\n",
            "GET /x\u{7F} HTTP/1.1\r\n\r\n",
            "GET /x HTTP/1.1\r\nX: a\u{0}b\r\n\r\n",
            "G(T /x HTTP/1.1\r\n\r\n",
        ] {
            #expect(isUnframed(text), "\(text.debugDescription)")
        }
    }

    @Test("well framed but not for the fast path, and whether the decoder goes on reading after it")
    func notEligible() throws {
        let cases: [(String, keeps: Bool)] = [
            ("POST /x HTTP/1.1\r\n\r\n", true),
            ("GET /x HTTP/1.1\r\nExpect: 100-continue\r\n\r\n", true),
            ("GET /x HTTP/1.1\r\nAccept-Encoding: gzip\r\nAccept-Encoding: br\r\n\r\n", true),
            ("GET http://h/x HTTP/1.1\r\n\r\n", true),
            ("GET /x HTTP/1.1\r\nCookie: \(String(repeating: "c", count: 17 * 1024))\r\n\r\n", true),
            ("GET /x HTTP/1.0\r\n\r\n", false),
            ("GET /x HTTP/1.1\r\nConnection: close\r\n\r\n", false),
            ("GET /x HTTP/1.1\r\nConnection: Close\r\n\r\n", false),
            ("GET /x HTTP/1.1\r\nConnection: keep-alive, Upgrade\r\nUpgrade: h2c\r\n\r\n", false),
            ("CONNECT h:443 HTTP/1.1\r\n\r\n", false),
        ]
        for (text, keeps) in cases {
            let head = try head(text)
            #expect(!head.eligible, "\(text.prefix(60).debugDescription)")
            #expect(head.keepsConnection == keeps, "\(text.prefix(60).debugDescription)")
        }
        let keepAlive = try head("GET /x HTTP/1.1\r\nConnection: Keep-Alive\r\n\r\n")
        #expect(keepAlive.eligible && keepAlive.keepsConnection)
    }
}
