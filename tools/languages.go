package tools

import (
	"errors"
	"regexp"
	"slices"
	"strings"

	"github.com/enclave-mcp/enclave-mcp/sandbox"
)

// Language is one language multi_code_executor runs: what its code is saved as and how it
// is built and run, each step an argv run with no shell in a fresh directory of its own.
//
// Argv items and File may hold placeholders: "{main}" is the program's entry point (the
// public class of Java code, the object of Scala code; "Main" when the code names none),
// and an item that is exactly "{sources}" becomes the code's file followed by every file
// of the call whose name has the same extension, sorted. In Env, "{dir}" is the run's
// directory and "{workspace}" the workspace (absolute paths).
type Language struct {
	// Name is ms-enclave's name for the language ("cpp", "ts", "d_ut").
	Name string
	// Aliases are other names it answers to: SandboxFusion's ("typescript", "R", "D_ut")
	// and short ones ("js"). Names match without regard to case.
	Aliases []string
	// File is the name the code is saved as.
	File string
	// Compile builds the program; nil for a language that runs its source.
	Compile []string
	// Run runs the program (or the tests).
	Run []string
	// Env holds KEY=VALUE pairs set for both steps, over the sandbox's own environment.
	Env []string
	// Files are written beside the code unless the call brings a file of the same name
	// (Go's go.mod).
	Files map[string]string
	// Packages are the Debian packages that carry the toolchain (all in
	// sandbox.PolyglotImage).
	Packages []string
	// Hello is a program that prints "hello, world" (for a test runner, a test that
	// passes): for tests, benchmarks and examples.
	Hello string

	// entry finds the entry point "{main}" stands for in the code.
	entry func(code string) (string, error)
	// runTests replaces Run when entry reports that the code has no main method (JUnit).
	runTests func(code string) []string
}

// Compiled reports whether the language has a build step.
func (l Language) Compiled() bool { return l.Compile != nil }

// runEnv is every language's environment. HOME is the run's directory, so the dotfiles
// and caches toolchains write (Go's build cache, Mono's and Kotlin's settings) go with it
// instead of piling up in the workspace; the build tools stay offline.
var runEnv = []string{"HOME={dir}"}

// Java's and Scala's JVM flags: the serial collector needs the fewest threads (the
// sandbox's process limit counts threads), and no perf data file is written to /tmp.
var jvmFlags = []string{"-XX:+UseSerialGC", "-XX:-UsePerfData"}

// compilerJVMFlags are for a JVM that compiles and exits: the quick JIT tier alone starts
// javac, scalac and kotlinc about a third sooner.
var compilerJVMFlags = append(slices.Clone(jvmFlags), "-XX:TieredStopAtLevel=1")

// junitClassPath puts Debian's JUnit 4 (and the Hamcrest it needs) beside the code.
const junitClassPath = "/usr/share/java/junit4.jar:/usr/share/java/hamcrest-core.jar:."

// languages is the table, in the order the schema's enum and the README list them.
var languages = []Language{{
	Name:     "python",
	File:     "main.py",
	Run:      []string{"python3", "main.py"},
	Packages: []string{"python3"},
	Hello:    "print(\"hello, world\")\n",
}, {
	Name:     "pytest",
	File:     "test_main.py",
	Run:      []string{"pytest-3", "-q", "-p", "no:cacheprovider", "test_main.py"},
	Packages: []string{"python3-pytest"},
	Hello:    "def test_hello():\n    assert \"hello, world\".split(\", \") == [\"hello\", \"world\"]\n",
}, {
	Name:     "bash",
	File:     "main.sh",
	Run:      []string{"bash", "main.sh"},
	Packages: []string{"bash"},
	Hello:    "echo \"hello, world\"\n",
}, {
	Name:     "c",
	File:     "main.c",
	Compile:  []string{"gcc", "-std=c17", "-O2", "-o", "main", "{sources}", "-lm"},
	Run:      []string{"./main"},
	Packages: []string{"gcc"},
	Hello:    "#include <stdio.h>\n\nint main(void) {\n    printf(\"hello, world\\n\");\n    return 0;\n}\n",
}, {
	Name:     "cpp",
	File:     "main.cpp",
	Compile:  []string{"g++", "-std=c++17", "-O2", "-o", "main", "{sources}"},
	Run:      []string{"./main"},
	Packages: []string{"g++"},
	Hello:    "#include <iostream>\n\nint main() {\n    std::cout << \"hello, world\" << std::endl;\n}\n",
}, {
	Name:     "csharp",
	File:     "Program.cs",
	Compile:  []string{"mcs", "-nologo", "-out:main.exe", "{sources}"},
	Run:      []string{"mono", "main.exe"},
	Packages: []string{"mono-mcs", "mono-runtime"},
	Hello:    "class Program {\n    static void Main() {\n        System.Console.WriteLine(\"hello, world\");\n    }\n}\n",
}, {
	Name:    "go",
	File:    "main.go",
	Compile: []string{"go", "build", "-o", "main", "."},
	Run:     []string{"./main"},
	Env:     goEnv,
	// A module of its own, so that the code's other files are built with it and a go.mod
	// of the workspace around it does not count.
	Files:    map[string]string{"go.mod": goMod},
	Packages: []string{"golang-go"},
	Hello:    "package main\n\nimport \"fmt\"\n\nfunc main() {\n\tfmt.Println(\"hello, world\")\n}\n",
}, {
	Name:     "go_test",
	File:     "main_test.go",
	Run:      []string{"go", "test", "."},
	Env:      goEnv,
	Files:    map[string]string{"go.mod": goMod},
	Packages: []string{"golang-go"},
	Hello:    "package main\n\nimport \"testing\"\n\nfunc TestHello(t *testing.T) {\n\tif s := \"hello, \" + \"world\"; s != \"hello, world\" {\n\t\tt.Fatal(s)\n\t}\n}\n",
}, {
	Name:     "java",
	File:     "{main}.java",
	Compile:  append(append([]string{"javac", "-encoding", "UTF-8"}, jFlags(compilerJVMFlags)...), "{sources}"),
	Run:      append(append([]string{"java", "-ea"}, jvmFlags...), "-cp", ".", "{main}"),
	Packages: []string{"openjdk-17-jdk-headless"},
	Hello:    "public class Main {\n    public static void main(String[] args) {\n        System.out.println(\"hello, world\");\n    }\n}\n",
	entry:    javaClass,
}, {
	Name:     "junit",
	File:     "{main}.java",
	Compile:  append(append([]string{"javac", "-encoding", "UTF-8"}, jFlags(compilerJVMFlags)...), "-cp", junitClassPath, "{sources}"),
	Run:      append(append([]string{"java", "-ea"}, jvmFlags...), "-cp", junitClassPath, "{main}"),
	Packages: []string{"openjdk-17-jdk-headless", "junit4"},
	Hello:    "import static org.junit.Assert.assertEquals;\n\nimport org.junit.Test;\n\npublic class HelloTest {\n    @Test\n    public void hello() {\n        assertEquals(\"hello, world\", \"hello, \" + \"world\");\n    }\n}\n",
	entry:    javaClass,
	runTests: func(string) []string {
		return append(append([]string{"java", "-ea"}, jvmFlags...), "-cp", junitClassPath, "org.junit.runner.JUnitCore", "{main}")
	},
}, {
	Name:     "nodejs",
	Aliases:  []string{"js", "javascript"},
	File:     "main.js",
	Run:      []string{"node", "main.js"},
	Packages: []string{"nodejs"},
	Hello:    "console.log(\"hello, world\");\n",
}, {
	Name:    "ts",
	Aliases: []string{"typescript"},
	File:    "main.ts",
	// Type errors fail the build, as a compiler's errors do.
	Compile:  []string{"tsc", "--pretty", "false", "--target", "es2020", "--module", "commonjs", "--lib", "es2020", "--typeRoots", "/usr/share/nodejs/@types", "--types", "node", "--skipLibCheck", "main.ts"},
	Run:      []string{"node", "main.js"},
	Packages: []string{"node-typescript", "nodejs"},
	Hello:    "const greeting: string = \"hello, world\";\nconsole.log(greeting);\n",
}, {
	Name:     "jest",
	File:     "main.test.ts",
	Run:      []string{"jest", "--ci", "--colors=false", "--rootDir", "."},
	Files:    map[string]string{"jest.config.js": jestConfig},
	Env:      []string{"NODE_PATH=/usr/share/nodejs:/usr/lib/nodejs"},
	Packages: []string{"jest", "ts-jest"},
	Hello:    "test(\"hello\", () => {\n  const greeting: string = \"hello, \" + \"world\";\n  expect(greeting).toBe(\"hello, world\");\n});\n",
}, {
	Name:     "rust",
	File:     "main.rs",
	Compile:  []string{"rustc", "--edition", "2021", "-O", "-o", "main", "main.rs"},
	Run:      []string{"./main"},
	Packages: []string{"rustc"},
	Hello:    "fn main() {\n    println!(\"hello, world\");\n}\n",
}, {
	Name:     "php",
	File:     "main.php",
	Run:      []string{"php", "-d", "display_errors=stderr", "-d", "log_errors=0", "-f", "main.php"},
	Packages: []string{"php-cli"},
	Hello:    "<?php\necho \"hello, world\\n\";\n",
}, {
	Name:     "ruby",
	File:     "main.rb",
	Run:      []string{"ruby", "main.rb"},
	Packages: []string{"ruby"},
	Hello:    "puts \"hello, world\"\n",
}, {
	Name:     "perl",
	File:     "main.pl",
	Run:      []string{"perl", "main.pl"},
	Packages: []string{"perl"},
	Hello:    "print \"hello, world\\n\";\n",
}, {
	Name:     "lua",
	File:     "main.lua",
	Run:      []string{"lua5.4", "main.lua"},
	Packages: []string{"lua5.4"},
	Hello:    "print(\"hello, world\")\n",
}, {
	Name:     "r",
	Aliases:  []string{"R"},
	File:     "main.R",
	Run:      []string{"Rscript", "main.R"},
	Packages: []string{"r-base-core"},
	Hello:    "cat(\"hello, world\\n\")\n",
}, {
	Name:    "d_ut",
	Aliases: []string{"D_ut"},
	File:    "main.d",
	// Built with its unittest blocks, as ms-enclave's `dmd -unittest`; a program without a
	// main gets an empty one.
	Compile:  []string{"ldc2", "-unittest", "--main", "-of=main", "{sources}"},
	Run:      []string{"./main"},
	Packages: []string{"ldc"},
	Hello:    "import std.stdio;\n\nunittest {\n    assert(\"hello, \" ~ \"world\" == \"hello, world\");\n}\n\nvoid main() {\n    writeln(\"hello, world\");\n}\n",
}, {
	Name:    "scala",
	File:    "Main.scala",
	Compile: append(append([]string{"scalac"}, jFlags(compilerJVMFlags)...), "-d", ".", "{sources}"),
	// java with Scala's library, not the scala runner, which loads the compiler first
	// (0.9 s instead of 0.1 s).
	Run:      append(append([]string{"java"}, jvmFlags...), "-cp", "/usr/share/java/scala-library.jar:.", "{main}"),
	Packages: []string{"scala"},
	Hello:    "object Main {\n  def main(args: Array[String]): Unit = println(\"hello, world\")\n}\n",
	entry:    scalaObject,
}, {
	Name: "kotlin_script",
	File: "main.kts",
	Run:  []string{"kotlinc", "-script", "main.kts"},
	// kotlinc's launcher reads JVM flags from JAVA_OPTS (its default is the heap sizes);
	// no VM warnings, since it passes -noverify, which JDK 13+ warns about on every run.
	Env:      []string{"JAVA_OPTS=-Xmx256M -Xms32M " + strings.Join(compilerJVMFlags, " ") + " -XX:-PrintWarnings"},
	Packages: []string{"kotlin"},
	Hello:    "println(\"hello, world\")\n",
}, {
	Name: "verilog",
	File: "main.sv",
	// ms-enclave's flags: the top module is tb.
	Compile:  []string{"iverilog", "-Wall", "-Winfloop", "-Wno-timescale", "-g2012", "-s", "tb", "-o", "main.vvp", "{sources}"},
	Run:      []string{"vvp", "-n", "main.vvp"},
	Packages: []string{"iverilog"},
	Hello:    "module tb;\n  initial begin\n    $display(\"hello, world\");\n    $finish;\n  end\nendmodule\n",
}, {
	Name:     "racket",
	File:     "main.rkt",
	Run:      []string{"racket", "main.rkt"},
	Packages: []string{"racket"},
	Hello:    "#lang racket\n(displayln \"hello, world\")\n",
}, {
	Name:     "sql",
	File:     "main.sql",
	Run:      []string{"sqlite3", "-bail", "-batch", ":memory:", ".read main.sql"},
	Packages: []string{"sqlite3"},
	Hello:    "SELECT 'hello, world';\n",
}}

// goEnv keeps the go command offline and on its own toolchain; modules come only from the
// run's directory. The build cache is the one go uses in the sandbox anyway (HOME is the
// workspace), so that it outlives the run: a go test of a few lines takes 3.6 s with a cold
// cache and 0.3 s with a warm one.
var goEnv = []string{"GOPROXY=off", "GOFLAGS=-mod=mod", "GOWORK=off", "GOTOOLCHAIN=local", "GOTELEMETRY=off",
	"GOCACHE={workspace}/.cache/go-build"}

// goMod names the module prog: go test cannot test a package whose import path is "main".
const goMod = "module prog\n\ngo 1.19\n"

// jestConfig runs TypeScript tests through ts-jest, in Node's environment, with the type
// definitions Debian installs (jest's and Node's) and plain-text diagnostics. JavaScript is
// not transformed: jest's own modules live outside any node_modules in Debian, where the
// default pattern would have ts-jest compile them.
const jestConfig = `module.exports = {
  testEnvironment: 'node',
  transform: {
    '^.+\\.tsx?$': ['ts-jest', {
      diagnostics: {pretty: false},
      tsconfig: {esModuleInterop: true, pretty: false, typeRoots: ['/usr/share/nodejs/@types'], types: ['jest', 'node']},
    }],
  },
};
`

// unsupportedLanguages are ms-enclave's (and SandboxFusion's) languages that no image here
// can run, and why.
var unsupportedLanguages = map[string]string{
	"julia":      "Debian does not package Julia",
	"swift":      "Debian does not package Swift",
	"lean":       "Debian does not package Lean",
	"cuda":       "CUDA needs a GPU, and sandboxes have none",
	"python_gpu": "it needs a GPU, and sandboxes have none",
}

// jFlags passes JVM flags through a JVM-based compiler's launcher (-J).
func jFlags(flags []string) []string {
	out := make([]string, len(flags))
	for i, f := range flags {
		out[i] = "-J" + f
	}
	return out
}

var (
	javaClassRE   = regexp.MustCompile(`(?m)^\s*public\s+(?:(?:final|abstract)\s+)*class\s+([A-Za-z_$][\w$]*)`)
	javaMainRE    = regexp.MustCompile(`\bstatic\s+void\s+main\s*\(`)
	scalaObjectRE = regexp.MustCompile(`(?m)^\s*object\s+([A-Za-z_]\w*)`)
)

// javaClass is the code's public class, which names its file and is run; Main when there
// is none (the class javac then expects in Main.java).
func javaClass(code string) (string, error) {
	if m := javaClassRE.FindStringSubmatch(code); m != nil {
		return m[1], nil
	}
	return "Main", nil
}

// scalaObject is the first top-level object, whose main the program runs.
func scalaObject(code string) (string, error) {
	if m := scalaObjectRE.FindStringSubmatch(code); m != nil {
		return m[1], nil
	}
	return "", errors.New("no object found in the Scala code: the program runs the main method of its first object (object Main { def main(args: Array[String]): Unit = ... })")
}

// Languages lists the languages multi_code_executor runs, in a fixed order. The toolchains
// are in sandbox.PolyglotImage; other images carry some of them (python and bash are in
// every Debian image here).
func Languages() []Language {
	out := make([]Language, len(languages))
	for i, l := range languages {
		out[i] = l
		out[i].Aliases = slices.Clone(l.Aliases)
	}
	return out
}

// LanguageByName finds a language by its name or an alias, ignoring case and surrounding
// space.
func LanguageByName(name string) (Language, bool) {
	name = strings.ToLower(strings.TrimSpace(name))
	for _, l := range languages {
		if l.Name == name || slices.ContainsFunc(l.Aliases, func(a string) bool { return strings.ToLower(a) == name }) {
			return l, true
		}
	}
	return Language{}, false
}

// LanguageNames are the names languages answer to, each language's name then its aliases,
// in table order: the schema's enum.
func LanguageNames() []string {
	var names []string
	for _, l := range languages {
		names = append(names, l.Name)
		names = append(names, l.Aliases...)
	}
	return names
}

// languageError says why name is not a language here: not packaged, needs a GPU, or
// unknown; it lists the valid names.
func languageError(tool, name string) error {
	valid := strings.Join(LanguageNames(), ", ")
	if why, ok := unsupportedLanguages[strings.ToLower(strings.TrimSpace(name))]; ok {
		return argErrorf(tool, "language %q is not supported: %s; supported languages: %s", name, why, valid)
	}
	return argErrorf(tool, "unknown language %q; supported languages: %s", name, valid)
}

// missingToolchain is the result for a language whose program is not in the sandbox's
// image.
func missingToolchain(l Language, program string) Result {
	return failure("language " + l.Name + " needs " + program + " (Debian package " + strings.Join(l.Packages, ", ") +
		"), which this sandbox's image does not have; use the image " + sandbox.PolyglotImage +
		" (build it with `enclave-mcp images build --image " + sandbox.PolyglotImage + "`, then serve --image " +
		sandbox.PolyglotImage + " or set image in the sandbox config)")
}
