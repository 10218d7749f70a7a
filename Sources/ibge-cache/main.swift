import Foundation
import NIOCore
import NIOPosix

// Run Swift Concurrency's tasks on NIO's event loops: a task that awaits a Redis reply or an
// HTTP write then resumes on the loop that did the I/O, without a hop to another thread pool.
// It must happen before any task is started, hence here and not in a command.
// `IBGE_CACHE_THREADS` sets how many event-loop threads there are (default: one per core).
if let text = ProcessInfo.processInfo.environment["IBGE_CACHE_THREADS"], let threads = Int(text), (1...1024).contains(threads) {
    NIOSingletons.groupLoopCountSuggestion = threads
}
NIOSingletons.unsafeTryInstallSingletonPosixEventLoopGroupAsConcurrencyGlobalExecutor()
await EntryPoint.run()
