package main

import (
	"context"
	"fmt"
	"os"
	"strings"

	"github.com/enclave-mcp/enclave-mcp/sandbox"
	"github.com/enclave-mcp/enclave-mcp/tools"
)

// Languages: multi_code_executor's whole call (write the files, build, run, remove the
// directory) for each language's hello-world, and for the compiled languages a small program
// that sums 1..10^6 in a loop, in one sandbox of the polyglot image. There is no docker-exec
// column: the build and the run dominate, and they are the same processes either way. Skipped
// with a note when the image is missing (it is built only on request).

// loopSum is what every loop program prints: the sum of 1..10^6.
const loopSum = "500000500000"

// loopPrograms sum 1..10^6 in a loop and print the sum, one per compiled language (test
// runners excepted).
var loopPrograms = map[string]string{
	"c":       "#include <stdio.h>\nint main(void) { long long s = 0; for (long long i = 1; i <= 1000000; i++) s += i; printf(\"%lld\\n\", s); return 0; }\n",
	"cpp":     "#include <iostream>\nint main() { long long s = 0; for (long long i = 1; i <= 1000000; i++) s += i; std::cout << s << std::endl; }\n",
	"csharp":  "class Program { static void Main() { long s = 0; for (long i = 1; i <= 1000000; i++) s += i; System.Console.WriteLine(s); } }\n",
	"go":      "package main\n\nimport \"fmt\"\n\nfunc main() {\n\tvar s int64\n\tfor i := int64(1); i <= 1000000; i++ {\n\t\ts += i\n\t}\n\tfmt.Println(s)\n}\n",
	"java":    "public class Main { public static void main(String[] a) { long s = 0; for (long i = 1; i <= 1000000; i++) s += i; System.out.println(s); } }\n",
	"ts":      "let s: number = 0;\nfor (let i = 1; i <= 1000000; i++) s += i;\nconsole.log(s);\n",
	"rust":    "fn main() { let mut s: i64 = 0; for i in 1..=1000000i64 { s += i; } println!(\"{}\", s); }\n",
	"d_ut":    "import std.stdio;\nvoid main() { long s = 0; foreach (i; 1 .. 1_000_001L) s += i; writeln(s); }\n",
	"scala":   "object Main { def main(a: Array[String]): Unit = { var s = 0L; var i = 1L; while (i <= 1000000L) { s += i; i += 1 }; println(s) } }\n",
	"verilog": "module tb;\n  longint s;\n  initial begin\n    s = 0;\n    for (longint i = 1; i <= 1000000; i++) s += i;\n    $display(\"%0d\", s);\n    $finish;\n  end\nendmodule\n",
}

// testRunners are the languages whose hello-world is a test that passes, printing the
// runner's report rather than the greeting (d_ut runs its unittest blocks instead of main).
var testRunners = map[string]bool{"pytest": true, "go_test": true, "junit": true, "jest": true, "d_ut": true}

// polyglotRuns is the run count per language: a JVM compiler takes seconds per call.
func (b *bench) polyglotRuns() int { return max(5, b.n/3) }

func (b *bench) polyglot(ctx context.Context) error {
	cfg := b.cfg
	cfg.Image = sandbox.PolyglotImage
	present, err := b.engine.ImagePresent(ctx, cfg.Image)
	if err != nil {
		return err
	}
	if !present {
		fix := "enclave-mcp images build --image " + cfg.Image + " (make images-polyglot)"
		fmt.Fprintf(os.Stderr, "  skipped: image %s is missing (%s)\n", cfg.Image, fix)
		b.rep.add(row{Op: "multi_code_executor, every language", Skipped: "image " + cfg.Image + " missing: " + fix})
		return nil
	}
	defs, err := b.toolDefs()
	if err != nil {
		return err
	}
	tool, ok := defs["multi_code_executor"]
	if !ok {
		return fmt.Errorf("tools.All() has no multi_code_executor")
	}
	sb, err := sandbox.Create(ctx, b.engine, sandbox.CreateOptions{Config: cfg, Owner: "enclave-bench"})
	if err != nil {
		return fmt.Errorf("creating the polyglot sandbox: %w", err)
	}
	b.track.addSandbox(sb)
	defer b.closeSandbox(context.WithoutCancel(ctx), sb)

	call := func(lang, code, want string) func(*stopwatch) error {
		return func(*stopwatch) error {
			res, err := invoke(ctx, tool, sb, map[string]any{"language": lang, "code": code})
			if err != nil {
				return err
			}
			if !strings.Contains(res.Output+res.Error, want) {
				return fmt.Errorf("%s printed %q (stderr %q), want %q", lang, res.Output, res.Error, want)
			}
			return nil
		}
	}
	for _, lang := range tools.Languages() {
		want := "hello, world"
		if testRunners[lang.Name] {
			want = "" // its hello is a passing test: success is the check
		}
		r := row{Op: fmt.Sprintf("multi_code_executor %s hello-world", lang.Name), Baseline: "—"}
		if r.Ours, err = measure(ctx, "ours: "+lang.Name+" hello-world", b.polyglotRuns(), call(lang.Name, lang.Hello, want)); err != nil {
			return err
		}
		b.rep.add(r)
		loop, ok := loopPrograms[lang.Name]
		if !ok {
			continue
		}
		r = row{Op: fmt.Sprintf("multi_code_executor %s sum 1..10^6 (build + run)", lang.Name), Baseline: "—"}
		if r.Ours, err = measure(ctx, "ours: "+lang.Name+" loop", b.polyglotRuns(), call(lang.Name, loop, loopSum)); err != nil {
			return err
		}
		b.rep.add(r)
	}
	return nil
}
