package tools

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// argvTemplate is a declared tool's argv, parsed once when the tool is declared.
type argvTemplate []argvItem

// argvItem is one item of an argvTemplate: text and placeholders joined into one argument,
// or, for {name...}, the array parameter whose elements become one argument each.
type argvItem struct {
	parts  []argvPart
	spread string
}

// argvPart is literal text, or a placeholder when param is set.
type argvPart struct {
	text  string
	param string
}

// parseArgv parses argv against the declared parameters: every placeholder must name one of
// them, an array parameter is only ever spread and only an array is, and the program,
// argv[0], is fixed text.
func parseArgv(argv []string, params CommandParams) (argvTemplate, error) {
	if len(argv) == 0 {
		return nil, errors.New("argv is empty; it needs at least the program to run")
	}
	if argv[0] == "" {
		return nil, errors.New("argv[0], the program to run, is empty")
	}
	t := make(argvTemplate, len(argv))
	for i, item := range argv {
		it, err := parseItem(item)
		if err != nil {
			return nil, fmt.Errorf("argv[%d] %q: %w", i, item, err)
		}
		if i == 0 && !it.literal() {
			return nil, fmt.Errorf("argv[0] %q: the program to run must be fixed text, without placeholders", item)
		}
		for _, name := range it.params() {
			p, ok := params.byName(name)
			switch {
			case !ok && len(params) == 0:
				return nil, fmt.Errorf("argv[%d] %q: placeholder {%s} names no parameter; the tool declares none", i, item, name)
			case !ok:
				return nil, fmt.Errorf("argv[%d] %q: placeholder {%s} names no parameter; parameters: %s", i, item, name, strings.Join(params.names(), ", "))
			case name == it.spread && p.Type != typeArray:
				return nil, fmt.Errorf("argv[%d] %q: {%s...} passes an array's elements as items, but parameter %q is of type %s; write {%s}", i, item, name, name, p.Type, name)
			case name != it.spread && p.Type == typeArray:
				return nil, fmt.Errorf("argv[%d] %q: parameter %q is an array; write {%s...} alone in an item to pass one item per element", i, item, name, name)
			}
		}
		t[i] = it
	}
	return t, nil
}

// parseItem splits one argv item into text and placeholders. {name} is a placeholder,
// {name...} (alone in its item) a spread array, and {{ and }} are literal braces.
func parseItem(item string) (argvItem, error) {
	var it argvItem
	var text strings.Builder
	flush := func() {
		if text.Len() > 0 {
			it.parts = append(it.parts, argvPart{text: text.String()})
			text.Reset()
		}
	}
	// Bytes, not runes: braces are ASCII, and no byte of a multi-byte UTF-8 rune is one.
	for i := 0; i < len(item); i++ {
		switch c := item[i]; {
		case strings.HasPrefix(item[i:], "{{"):
			text.WriteByte('{')
			i++
		case strings.HasPrefix(item[i:], "}}"):
			text.WriteByte('}')
			i++
		case c == '}':
			return argvItem{}, errors.New(`unmatched "}"; write }} for a literal brace`)
		case c == '{':
			end := strings.IndexByte(item[i:], '}')
			if end < 0 {
				return argvItem{}, errors.New(`unclosed "{"; write {{ for a literal brace`)
			}
			inner := item[i+1 : i+end]
			name, spread := strings.CutSuffix(inner, "...")
			if !paramNamePattern.MatchString(name) {
				return argvItem{}, fmt.Errorf("placeholder {%s} is not a parameter name; write {{ and }} for literal braces", inner)
			}
			if spread {
				if it.spread != "" {
					return argvItem{}, fmt.Errorf("{%s} must be the whole item: it becomes one item per element", inner)
				}
				it.spread = name
			} else {
				flush()
				it.parts = append(it.parts, argvPart{param: name})
			}
			i += end
		default:
			text.WriteByte(c)
		}
	}
	flush()
	if it.spread != "" && len(it.parts) > 0 {
		return argvItem{}, fmt.Errorf("{%s...} must be the whole item: it becomes one item per element", it.spread)
	}
	return it, nil
}

// literal reports whether the item has no placeholder.
func (it argvItem) literal() bool { return it.spread == "" && len(it.params()) == 0 }

// params lists the parameters the item refers to.
func (it argvItem) params() []string {
	if it.spread != "" {
		return []string{it.spread}
	}
	var names []string
	for _, p := range it.parts {
		if p.param != "" {
			names = append(names, p.param)
		}
	}
	return names
}

// text is the literal text of an item without placeholders.
func (it argvItem) text() string {
	var b strings.Builder
	for _, p := range it.parts {
		b.WriteString(p.text)
	}
	return b.String()
}

// expand substitutes args (as decodeSchemaArgs returns them) into the template. An item that
// refers to a parameter left out of args is dropped whole, and a spread array becomes one item
// per element (none when empty or left out). Until a literal "--" item, a free-text value
// (a string without enum, or an array element) may not start an item with "-": the program
// would read it as an option, which is the one way an argument can change what a command does
// without a shell.
func (t argvTemplate) expand(tool string, params CommandParams, args map[string]any) ([]string, error) {
	argv := make([]string, 0, len(t))
	options := true
	for i, it := range t {
		if it.spread != "" {
			elems, _ := args[it.spread].([]string)
			for j, s := range elems {
				if options && strings.HasPrefix(s, "-") {
					return nil, optionError(tool, fmt.Sprintf("%s[%d]", it.spread, j), s)
				}
			}
			argv = append(argv, elems...)
			continue
		}
		var b strings.Builder
		keep := true
		for _, part := range it.parts {
			if part.param == "" {
				b.WriteString(part.text)
				continue
			}
			v, ok := args[part.param]
			if !ok {
				keep = false
				break
			}
			s := render(v)
			if p, _ := params.byName(part.param); options && b.Len() == 0 && strings.HasPrefix(s, "-") && p.freeText() {
				return nil, optionError(tool, part.param, s)
			}
			b.WriteString(s)
		}
		if !keep {
			continue
		}
		if i > 0 && it.literal() && it.text() == "--" {
			options = false
		}
		argv = append(argv, b.String())
	}
	return argv, nil
}

// optionError refuses a value that would be read as an option.
func optionError(tool, param, value string) error {
	return argErrorf(tool, "parameter %q must not start with \"-\" here: the command would read %q as an option", param, value)
}

// render writes an argument as the text of an argv item: numbers in plain decimal notation,
// booleans as true or false.
func render(v any) string {
	switch v := v.(type) {
	case string:
		return v
	case int64:
		return strconv.FormatInt(v, 10)
	case float64:
		return strconv.FormatFloat(v, 'f', -1, 64)
	case bool:
		return strconv.FormatBool(v)
	}
	return fmt.Sprint(v)
}
