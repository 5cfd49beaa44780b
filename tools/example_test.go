package tools_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"

	"github.com/enclave-mcp/enclave-mcp/sandbox"
	"github.com/enclave-mcp/enclave-mcp/schema"
	"github.com/enclave-mcp/enclave-mcp/tools"
)

// WordCountParams are the parameters of a tool a program embedding the server adds: the
// struct is the schema.
type WordCountParams struct {
	Text   string `json:"text" jsonschema_description:"The text whose words to count."`
	Unique bool   `json:"unique,omitempty" jsonschema_description:"Count each distinct word once."`
}

// ExampleNew adds a tool of one's own: a parameter struct and a handler. The list it joins is
// what session.New takes (session.Config.Tools), and MCP, REST and every schema export take
// their tools from there. A handler that needs the sandbox uses call.Sandbox, for instance
// call.Sandbox.Exec(ctx, sandbox.ExecRequest{Argv: ...}, nil).
func ExampleNew() {
	wordCount := tools.New(tools.Def{
		Name:        "word_count",
		Description: "Count the words of a text, separated by white space.",
		Sandbox:     sandbox.TypeDocker,
		ReadOnly:    true,
	}, func(_ context.Context, _ tools.Call, p WordCountParams) (tools.Result, error) {
		words := strings.Fields(p.Text)
		if p.Unique {
			seen := map[string]bool{}
			for _, w := range words {
				seen[w] = true
			}
			return tools.Result{Status: tools.StatusSuccess, Output: strconv.Itoa(len(seen))}, nil
		}
		return tools.Result{Status: tools.StatusSuccess, Output: strconv.Itoa(len(words))}, nil
	})

	all := append(tools.All(), wordCount)
	enabled, err := tools.Enabled(all, sandbox.ToolsConfig{"word_count": {}, "shell_executor": {}})
	if err != nil {
		panic(err)
	}
	for _, d := range enabled {
		fmt.Println("tool:", d.Name)
	}

	inputSchema, err := schema.MCP(wordCount.Schema())
	if err != nil {
		panic(err)
	}
	fmt.Println(string(inputSchema))

	res, err := wordCount.Invoke(context.Background(), tools.Call{}, json.RawMessage(`{"text": "to be or not to be", "unique": true}`))
	fmt.Println(res.Status, res.Output, err)

	_, err = wordCount.Bind(json.RawMessage(`{"txt": "to be"}`))
	fmt.Println(err)
	// Output:
	// tool: shell_executor
	// tool: word_count
	// {"properties":{"text":{"type":"string","description":"The text whose words to count."},"unique":{"type":"boolean","description":"Count each distinct word once."}},"additionalProperties":false,"type":"object","required":["text"]}
	// success 4 <nil>
	// word_count: unknown parameter "txt"; valid parameters: text, unique
}
