import NIOCore
import RESP

/// Small limits, so the fuzzer reaches the limit checks as well as the happy paths.
private let decoder = RESPDecoder(limits: .init(maxBulkLength: 4096, maxAggregateCount: 256, maxDepth: 8, maxLineLength: 256))

/// One fuzz input: decode it whole and in pieces; the two must agree and every value round-trip.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzRESPDecoder(_ start: UnsafeRawPointer, _ count: Int) -> CInt {
    _ = decoder.selfCheck(UnsafeRawBufferPointer(start: start, count: count))
    return 0
}

// SwiftPM links an executable with `main` aliased to `FuzzRESP_main`, so libFuzzer's own `main`
// is not used: this one hands control to libFuzzer's driver.
@_silgen_name("LLVMFuzzerRunDriver")
private func runFuzzerDriver(
    _ argc: UnsafeMutablePointer<CInt>,
    _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>,
    _ callback: @convention(c) (UnsafeRawPointer, Int) -> CInt
) -> CInt

@_cdecl("FuzzRESP_main")
public func fuzzMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    var argc = argc
    var argv = argv
    return runFuzzerDriver(&argc, &argv) { start, count in fuzzRESPDecoder(start, count) }
}
