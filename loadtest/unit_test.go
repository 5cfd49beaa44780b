package loadtest

import (
	"errors"
	"os"
	"strings"
	"testing"
	"time"
)

func TestSummarize(t *testing.T) {
	ms := func(v ...int) []time.Duration {
		out := make([]time.Duration, len(v))
		for i, x := range v {
			out[i] = time.Duration(x) * time.Millisecond
		}
		return out
	}
	hundred := make([]int, 100)
	for i := range hundred {
		hundred[i] = 100 - i // 100..1, unsorted
	}
	tests := []struct {
		name string
		in   []time.Duration
		want Percentiles
	}{
		{"empty", nil, Percentiles{}},
		{"one", ms(7), Percentiles{N: 1, P50: 7 * time.Millisecond, P95: 7 * time.Millisecond, P99: 7 * time.Millisecond, Max: 7 * time.Millisecond}},
		{"hundred", ms(hundred...), Percentiles{N: 100, P50: 50 * time.Millisecond, P95: 95 * time.Millisecond, P99: 99 * time.Millisecond, Max: 100 * time.Millisecond}},
		{"four", ms(40, 10, 30, 20), Percentiles{N: 4, P50: 20 * time.Millisecond, P95: 40 * time.Millisecond, P99: 40 * time.Millisecond, Max: 40 * time.Millisecond}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := summarize(tc.in); got != tc.want {
				t.Errorf("summarize = %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestParseVmHWM(t *testing.T) {
	tests := []struct {
		name    string
		status  string
		want    int64
		wantErr bool
	}{
		{"present", "Name:\tenclave-mcp\nVmPeak:\t 1000 kB\nVmHWM:\t   51200 kB\nVmRSS:\t 40000 kB\n", 50 << 20, false},
		{"missing", "Name:\tzombie\nState:\tZ\n", 0, true},
		{"odd unit", "VmHWM:\t 12 MB\n", 0, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseVmHWM([]byte(tc.status))
			if (err != nil) != tc.wantErr || got != tc.want {
				t.Errorf("parseVmHWM = %d, %v; want %d, error %v", got, err, tc.want, tc.wantErr)
			}
		})
	}
}

func TestListenURL(t *testing.T) {
	tests := []struct {
		line, want string
	}{
		{`{"msg":"serving MCP and the REST API over HTTP","mcp":"http://127.0.0.1:41951/mcp","sse":"http://127.0.0.1:41951/sse"}`, "http://127.0.0.1:41951"},
		{`{"msg":"listening","endpoint":"http://[::1]:8000/mcp"}`, "http://[::1]:8000"},
		{`{"msg":"sandbox created","sandbox":"1c5350eb56da"}`, ""},
		{`time=... level=INFO msg=serving mcp=http://127.0.0.1:1/mcp`, ""}, // text logs are not parsed
	}
	for _, tc := range tests {
		if got := listenURL([]byte(tc.line)); got != tc.want {
			t.Errorf("listenURL(%s) = %q, want %q", tc.line, got, tc.want)
		}
	}
}

func TestLogScannerFindsURLAcrossWrites(t *testing.T) {
	var out strings.Builder
	found := make(chan string, 1)
	l := &logScanner{out: &out, found: found}
	line := `{"msg":"serving","mcp":"http://127.0.0.1:5/mcp"}` + "\n"
	for _, part := range []string{`{"msg":"starting"}` + "\n" + line[:10], line[10:], `{"msg":"later"}` + "\n"} {
		if _, err := l.Write([]byte(part)); err != nil {
			t.Fatal(err)
		}
	}
	if got := <-found; got != "http://127.0.0.1:5" {
		t.Errorf("found %q", got)
	}
	if !strings.Contains(out.String(), "later") {
		t.Error("the log was not passed through")
	}
}

func TestParsePSLine(t *testing.T) {
	line := `{"ID":"abc123","Names":"enclave-1c5350eb56da","State":"running","Labels":"enclave-mcp.host=box,enclave-mcp.instance=9f,enclave-mcp.managed=true,enclave-mcp.pid=4242,enclave-mcp.pid-start=777"}`
	got, err := parsePSLine([]byte(line))
	if err != nil {
		t.Fatal(err)
	}
	want := Container{ID: "abc123", Name: "enclave-1c5350eb56da", State: "running", Instance: "9f", Host: "box", PID: 4242, PIDStart: "777"}
	if got != want {
		t.Errorf("parsePSLine = %+v, want %+v", got, want)
	}
	if _, err := parsePSLine([]byte("not json")); err == nil {
		t.Error("garbage parsed")
	}
}

func TestOwnerAlive(t *testing.T) {
	self, ok := processStartTicks(1)
	if !ok {
		t.Skip("no /proc/1/stat here")
	}
	host := hostname(t)
	tests := []struct {
		name string
		c    Container
		want bool
	}{
		{"live pid, same start", Container{Host: host, PID: 1, PIDStart: self}, true},
		{"live pid, other start (reused pid)", Container{Host: host, PID: 1, PIDStart: self + "0"}, false},
		{"no such pid", Container{Host: host, PID: 1 << 30}, false},
		{"no pid label", Container{Host: host}, false},
		{"other host: cannot tell", Container{Host: host + "-elsewhere", PID: 1 << 30}, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.c.OwnerAlive(); got != tc.want {
				t.Errorf("OwnerAlive = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestCheckCall(t *testing.T) {
	tests := []struct {
		name string
		out  CallResult
		err  error
		want string // a substring of the complaint; "" for none
	}{
		{"ok", CallResult{Text: "499500\n"}, nil, ""},
		{"transport error", CallResult{}, errors.New("connection refused"), "connection refused"},
		{"tool error", CallResult{Text: "boom\nmore", IsError: true}, nil, "isError: boom"},
		{"wrong output", CallResult{Text: "12\n"}, nil, "wrong output"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := checkCall(tc.out, tc.err, DefaultWant)
			if (tc.want == "") != (got == "") || !strings.Contains(got, tc.want) {
				t.Errorf("checkCall = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestMarkdown(t *testing.T) {
	rep := Report{
		Sessions: 2, CallsPerSession: 3, Calls: 6, Errors: 1, ErrorSamples: []string{"isError: boom"},
		Wall:    2 * time.Second,
		Latency: Percentiles{N: 4, P50: 5 * time.Millisecond, P95: 20 * time.Millisecond, P99: 20 * time.Millisecond, Max: 20 * time.Millisecond},
		Server:  &ServerReport{PeakRSS: 64 << 20},
	}
	md := rep.Markdown()
	for _, want := range []string{"| 2 x 3 (", "| 6 / 1 |", "| 3.0 calls/s |", "5.00 ms / 20 ms / 20 ms / 20 ms (n=4)", "64.0 MiB", "- isError: boom"} {
		if !strings.Contains(md, want) {
			t.Errorf("table lacks %q:\n%s", want, md)
		}
	}
}

func TestOptionsDefaults(t *testing.T) {
	o := Options{URL: "http://x", Sessions: 1, CallsPerSession: 1}
	if err := o.setDefaults(); err != nil || o.Code != DefaultCode || o.Want != DefaultWant || o.CallTimeout == 0 {
		t.Errorf("defaults: %+v, %v", o, err)
	}
	custom := Options{URL: "http://x", Sessions: 1, CallsPerSession: 1, Code: "print(1)"}
	if err := custom.setDefaults(); err != nil || custom.Want != "" {
		t.Errorf("custom code must not inherit the default's expected output: %+v", custom)
	}
	for _, bad := range []Options{{Sessions: 1, CallsPerSession: 1}, {URL: "http://x", CallsPerSession: 1}, {URL: "http://x", Sessions: 1}} {
		if err := bad.setDefaults(); err == nil {
			t.Errorf("%+v accepted", bad)
		}
	}
}

func hostname(t *testing.T) string {
	t.Helper()
	h, err := os.Hostname()
	if err != nil {
		t.Fatal(err)
	}
	return h
}
