// A small proxy-wasm module written against the raw ABI (v0.2.1) with the Go standard library only, built
// with `GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared`. It exists to exercise what the Go runtime
// needs from a host, as the Go SDK's filters do: sleeping and yielding (WASI poll_oneoff), goroutines,
// the clock, the environment, and panics, plus a few proxy-wasm callbacks and http calls.
//
// What it does depends on the request path:
//
//	/sleep      sleeps 20 ms and yields, then reports how long it waited (x-test-slept)
//	/goroutine  hands a value through a channel from another goroutine (x-test-goroutine)
//	/clock      reads the wall clock and the monotonic clock (x-test-clock)
//	/env        reads GO_MODULE_ENV from the environment (x-test-env)
//	/panic      panics; the host must treat it as a failed VM
//	/callouts   sends three http calls to the "side" cluster with an empty :authority, as the Go SDK's
//	            multiple_dispatches example does, and resumes the request when all have answered
//	/deny       answers 403 itself
//
// Every stream logs its path on request headers, then "on_log" and "on_done" in the order the host calls
// them.
package main

import (
	"os"
	"runtime"
	"strconv"
	"time"
	"unsafe"
)

func main() {}

// Map and buffer types of the ABI.
const (
	requestHeaders             = 0
	pluginConfiguration        = 7
	httpCallResponseHeaders    = 6
	logInfo                    = 2
	streamRequest              = 0
	callouts                   = 3
	sleepFor                   = 20 * time.Millisecond
	calloutTimeoutMilliseconds = 5000
)

// Blocks the host handed to the module, kept reachable until the module takes them.
var allocations = map[uintptr][]byte{}

// Per stream: the path it was opened for and the http calls it still waits for.
type stream struct {
	path    string
	waiting int
}

var streams = map[uint32]*stream{}

// Which stream dispatched each http call.
var calls = map[uint32]uint32{}

//go:wasmimport env proxy_log
func proxyLog(level uint32, message unsafe.Pointer, size uint32) uint32

//go:wasmimport env proxy_get_header_map_value
func proxyGetHeaderMapValue(mapType uint32, key unsafe.Pointer, keySize uint32, value unsafe.Pointer, valueSize unsafe.Pointer) uint32

//go:wasmimport env proxy_add_header_map_value
func proxyAddHeaderMapValue(mapType uint32, key unsafe.Pointer, keySize uint32, value unsafe.Pointer, valueSize uint32) uint32

//go:wasmimport env proxy_send_local_response
func proxySendLocalResponse(status uint32, details unsafe.Pointer, detailsSize uint32, body unsafe.Pointer, bodySize uint32, headers unsafe.Pointer, headersSize uint32, grpcStatus int32) uint32

//go:wasmimport env proxy_http_call
func proxyHttpCall(upstream unsafe.Pointer, upstreamSize uint32, headers unsafe.Pointer, headersSize uint32, body unsafe.Pointer, bodySize uint32, trailers unsafe.Pointer, trailersSize uint32, timeout uint32, token unsafe.Pointer) uint32

//go:wasmimport env proxy_continue_stream
func proxyContinueStream(streamType uint32) uint32

//go:wasmimport env proxy_set_effective_context
func proxySetEffectiveContext(context uint32) uint32

//go:wasmexport proxy_abi_version_0_2_1
func abiVersion() {}

//go:wasmexport proxy_on_memory_allocate
func onMemoryAllocate(size uint32) uint32 {
	block := make([]byte, size+1)
	ptr := uintptr(unsafe.Pointer(&block[0]))
	allocations[ptr] = block
	return uint32(ptr)
}

// take returns a block the host filled and forgets it.
func take(ptr, size uint32) []byte {
	block, ok := allocations[uintptr(ptr)]
	if !ok {
		return nil
	}
	delete(allocations, uintptr(ptr))
	return block[:size]
}

func pointer(s string) unsafe.Pointer {
	if s == "" {
		return nil
	}
	return unsafe.Pointer(unsafe.StringData(s))
}

func bytesPointer(b []byte) unsafe.Pointer {
	if len(b) == 0 {
		return nil
	}
	return unsafe.Pointer(&b[0])
}

func logInfoLine(message string) {
	proxyLog(logInfo, pointer(message), uint32(len(message)))
}

func header(mapType uint32, name string) string {
	var ptr, size uint32
	if proxyGetHeaderMapValue(mapType, pointer(name), uint32(len(name)), unsafe.Pointer(&ptr), unsafe.Pointer(&size)) != 0 || ptr == 0 {
		return ""
	}
	return string(take(ptr, size))
}

func addHeader(name, value string) {
	proxyAddHeaderMapValue(requestHeaders, pointer(name), uint32(len(name)), pointer(value), uint32(len(value)))
}

// encodeMap serializes header pairs in the ABI's map encoding.
func encodeMap(pairs [][2]string) []byte {
	out := le32(nil, uint32(len(pairs)))
	for _, pair := range pairs {
		out = le32(out, uint32(len(pair[0])))
		out = le32(out, uint32(len(pair[1])))
	}
	for _, pair := range pairs {
		out = append(out, pair[0]...)
		out = append(out, 0)
		out = append(out, pair[1]...)
		out = append(out, 0)
	}
	return out
}

func le32(out []byte, value uint32) []byte {
	return append(out, byte(value), byte(value>>8), byte(value>>16), byte(value>>24))
}

//go:wasmexport proxy_on_context_create
func onContextCreate(context, parent uint32) {
	if parent != 0 {
		streams[context] = &stream{}
	}
}

//go:wasmexport proxy_on_vm_start
func onVmStart(root, size uint32) uint32 { return 1 }

//go:wasmexport proxy_on_configure
func onConfigure(root, size uint32) uint32 { return 1 }

//go:wasmexport proxy_on_request_headers
func onRequestHeaders(context, headers, endOfStream uint32) uint32 {
	s := streams[context]
	if s == nil {
		return 0
	}
	s.path = header(requestHeaders, ":path")
	logInfoLine("go http on_request_headers " + s.path)
	switch s.path {
	case "/sleep":
		start := time.Now()
		time.Sleep(sleepFor)
		runtime.Gosched()
		if time.Since(start) >= sleepFor {
			addHeader("x-test-slept", "at least 20ms")
		} else {
			addHeader("x-test-slept", "too short")
		}
	case "/goroutine":
		done := make(chan string)
		go func() { done <- "handed over" }()
		addHeader("x-test-goroutine", <-done)
	case "/clock":
		now := time.Now()
		later := time.Now()
		verdict := "wall clock after 2020, monotonic clock steady"
		if now.Year() <= 2020 || later.Sub(now) < 0 {
			verdict = "wrong: " + now.String()
		}
		addHeader("x-test-clock", verdict)
	case "/env":
		value, ok := os.LookupEnv("GO_MODULE_ENV")
		if !ok {
			value = "unset"
		}
		addHeader("x-test-env", value)
	case "/panic":
		panic("go module panics on request")
	case "/deny":
		body := "denied by the go module"
		headers := encodeMap([][2]string{{"x-test-by", "go"}})
		proxySendLocalResponse(403, nil, 0, pointer(body), uint32(len(body)), bytesPointer(headers), uint32(len(headers)), -1)
		return 1
	case "/callouts":
		cluster := "side"
		for i := 0; i < callouts; i++ {
			headers := encodeMap([][2]string{{":method", "GET"}, {":path", "/callout/" + strconv.Itoa(i)}, {":authority", ""}})
			var token uint32
			status := proxyHttpCall(pointer(cluster), uint32(len(cluster)), bytesPointer(headers), uint32(len(headers)), nil, 0, nil, 0, calloutTimeoutMilliseconds, unsafe.Pointer(&token))
			if status != 0 {
				addHeader("x-test-dispatch-"+strconv.Itoa(i), "status "+strconv.Itoa(int(status)))
				continue
			}
			calls[token] = context
			s.waiting++
		}
		if s.waiting > 0 {
			return 1
		}
	}
	return 0
}

//go:wasmexport proxy_on_http_call_response
func onHttpCallResponse(root, token, headers, bodySize, trailers uint32) {
	context, ok := calls[token]
	if !ok {
		return
	}
	delete(calls, token)
	s := streams[context]
	if s == nil {
		return
	}
	proxySetEffectiveContext(context)
	s.waiting--
	addHeader("x-test-callout-status", header(httpCallResponseHeaders, ":status"))
	if s.waiting == 0 {
		proxyContinueStream(streamRequest)
	}
}

//go:wasmexport proxy_on_log
func onLog(context uint32) {
	if _, ok := streams[context]; ok {
		logInfoLine("go http on_log")
	}
}

//go:wasmexport proxy_on_done
func onDone(context uint32) uint32 {
	if _, ok := streams[context]; ok {
		logInfoLine("go http on_done")
	}
	return 1
}

//go:wasmexport proxy_on_delete
func onDelete(context uint32) {
	delete(streams, context)
}
