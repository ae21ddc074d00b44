"""The problem instance OptoPrime sees, built from graphs in the internals §5 format (no wrappers).

The golden tests take opto's own examples (the numeric `foo(bar(x))` one and
the sales agent of its README) and check that our instance carries the same
variables, inputs, intermediate values, outputs and feedback as OptoPrime's
published instance, with meaningful names instead of `float0`.
"""
from __future__ import annotations

import keyword
import re

import pytest

from optimizer_service.optoprime.instance import LEVELS, render_instance, render_prompt
from optimizer_service.optoprime.problem import analyse
from optimizer_service.optoprime.prompts import DEFAULT_OBJECTIVE
from optimizer_service.step_types import MemoryEntry, ParamState
from tests.optimizer.graphs import TraceGraph

FULL = LEVELS[0]


def instance_of(problem) -> str:
    return render_instance(analyse(problem), DEFAULT_OBJECTIVE, FULL)[0]


def numeric_example() -> tuple[TraceGraph, object]:
    """opto's tutorial: x = node(-1.0, trainable=True); foo(bar(x)); foo traced op by op."""
    g = TraceGraph()
    x = g.param_value("app:x", -1.0)
    bar_out = g.call("bar", {"x": x}, returns=2.0, doc="This is a test function, which does negative scaling.")
    foo = g.begin_call("foo", {"x": bar_out})
    one = g.value(1)
    y = g.op("add", "x + 1", [bar_out, one], 3.0, parent=foo)
    out = g.op("multiply", "x * y", [bar_out, y], 6.0, parent=foo)
    g.end_call(foo, out)
    problem = g.step_input(feedback={out: "The number needs to be larger."},
                           params=[ParamState("app:x", "float", -1.0, kind="global")])
    return g, problem


NUMERIC_INSTANCE = """
#Instruction
You need to change the <value> of the variables in #Variables to improve the output in accordance to #Feedback.

#Code
bar_output = bar(x=x)
add_output = bar_output + add_rhs
multiply_output = bar_output * add_output

#Documentation
[bar] This is a test function, which does negative scaling.
[add] the Python operation `x + 1`
[multiply] the Python operation `x * y`

#Variables
(float) x=-1.0

#Constraints


#Inputs
(int) add_rhs=1

#Others
(float) bar_output=2.0
(float) add_output=3.0

#Outputs
(float) multiply_output=6.0

#Feedback
The number needs to be larger.
"""

# OptoPrime's instance for the same program, in its published format (names
# by type and counter, operators as calls).
OPTO_NUMERIC_INSTANCE = """
#Instruction
You need to change the <value> of the variables in #Variables to improve the output in accordance to #Feedback.

#Code
bar0 = bar(x=x0)
add0 = add(x=bar0, y=int0)
multiply0 = multiply(x=bar0, y=add0)

#Documentation
[bar] This is a test function, which does negative scaling.
[add] This is an add operator of x and y.
[multiply] This is a multiply operator of x and y.

#Variables
(float) x0=-1.0

#Constraints


#Inputs
(int) int0=1

#Others
(float) bar0=2.0
(float) add0=3.0

#Outputs
(float) multiply0=6.0

#Feedback
The number needs to be larger.
"""


def sections(instance: str) -> dict[str, list[str]]:
    parts = re.split(r"^#(\w+)\n", instance, flags=re.MULTILINE)
    return {parts[i]: [line for line in parts[i + 1].strip("\n").split("\n") if line]
            for i in range(1, len(parts), 2)}


def values_of(lines: list[str], rename: dict[str, str]) -> list[tuple[str, str, str]]:
    found = []
    for line in lines:
        match = re.match(r"\((\w+)\) (\w+)=(.*)", line)
        assert match, line
        type_label, name, value = match.groups()
        found.append((type_label, rename.get(name, name), value))
    return found


def test_numeric_example_golden_instance():
    _, problem = numeric_example()
    assert instance_of(problem) == NUMERIC_INSTANCE


def test_numeric_example_carries_the_same_values_as_optoprimes_instance():
    _, problem = numeric_example()
    ours = sections(instance_of(problem))
    theirs = sections(OPTO_NUMERIC_INSTANCE)
    opto_to_ours = {"x0": "x", "int0": "add_rhs", "bar0": "bar_output", "add0": "add_output",
                    "multiply0": "multiply_output"}
    for section in ("Variables", "Inputs", "Others", "Outputs"):
        assert values_of(ours[section], {}) == values_of(theirs[section], opto_to_ours), section
    assert ours["Feedback"] == theirs["Feedback"]
    assert ours["Instruction"] == theirs["Instruction"]
    assert len(ours["Code"]) == len(theirs["Code"])


class Agent:
    def __repr__(self) -> str:
        return "Agent(system_prompt='You are a sales assistant.')"


DECIDE_LANG = '''    @tracer.bundle(trainable=True)
    def decide_lang(self, response):
        """Map the language into a variable"""
        return
'''
GREET = '''    @tracer.bundle(trainable=True)
    def greet(self, lang, user_name):
        """Produce a greeting based on the language"""
        greeting = "Hola"
        return f"{greeting}, {user_name}!"
'''
CALL_LLM_DOC = "Query the LLM with a system prompt, an instruction and the user's message."


def sales_agent_example():
    """opto's README sales agent: two trainable instructions, two trainable methods, traced call by call."""
    g = TraceGraph()
    agent = g.value(Agent())
    query = g.value("Hola, soy Juan.")
    system = g.value("You are a sales assistant.")
    instruct1 = g.param_value("app:Agent.instruct1", "Decide the language")
    instruct2 = g.param_value("app:Agent.instruct2", "Extract name if it's there")
    top = g.begin_call("Agent.__call__", {"self": agent, "user_query": query})
    response = g.call("call_llm", {"system_prompt": system, "prompt": instruct1, "user_query": query},
                      returns="Spanish", doc=CALL_LLM_DOC, parent=top)
    lang = g.call("Agent.decide_lang", {"self": agent, "response": response}, returns=None,
                  doc="Map the language into a variable", source=DECIDE_LANG, trainable=True, parent=top)
    name = g.call("call_llm", {"system_prompt": system, "prompt": instruct2, "user_query": query},
                  returns="Juan", doc=CALL_LLM_DOC, parent=top)
    greeting = g.call("Agent.greet", {"self": agent, "lang": lang, "user_name": name}, returns="Hola, Juan!",
                      doc="Produce a greeting based on the language", source=GREET, trainable=True, parent=top)
    g.end_call(top, greeting)
    params = [
        ParamState("app:Agent.instruct1", "str", "Decide the language", kind="instance_attr"),
        ParamState("app:Agent.instruct2", "str", "Extract name if it's there", kind="instance_attr"),
        ParamState("app:Agent.decide_lang", "code", DECIDE_LANG, kind="source", signature="(self, response)",
                   func_id=g.function_id("Agent.decide_lang")),
        ParamState("app:Agent.greet", "code", GREET, kind="source", signature="(self, lang, user_name)",
                   func_id=g.function_id("Agent.greet")),
    ]
    return g.step_input(feedback={greeting: "Correct"}, params=params)


SALES_AGENT_INSTANCE = '''
#Instruction
You need to change the <value> of the variables in #Variables to improve the output in accordance to #Feedback.

#Code
call_llm_output = call_llm(system_prompt=system_prompt, prompt=instruct1, user_query=user_query)
decide_lang_output = decide_lang(self=self, response=call_llm_output, __code=decide_lang_code)
call_llm_output_2 = call_llm(system_prompt=system_prompt, prompt=instruct2, user_query=user_query)
greet_output = greet(self=self, lang=decide_lang_output, user_name=call_llm_output_2, __code=greet_code)

#Documentation
[call_llm] Query the LLM with a system prompt, an instruction and the user's message.
[decide_lang] Map the language into a variable
[greet] Produce a greeting based on the language

#Variables
(str) instruct1='Decide the language'
(str) instruct2="Extract name if it's there"
(code) decide_lang_code:@tracer.bundle(trainable=True)
def decide_lang(self, response):
    """Map the language into a variable"""
    return
(code) greet_code:@tracer.bundle(trainable=True)
def greet(self, lang, user_name):
    """Produce a greeting based on the language"""
    greeting = "Hola"
    return f"{greeting}, {user_name}!"

#Constraints


#Inputs
(str) system_prompt='You are a sales assistant.'
(str) user_query='Hola, soy Juan.'
(Agent) self=Agent(system_prompt='You are a sales assistant.')

#Others
(str) call_llm_output='Spanish'
(NoneType) decide_lang_output=None
(str) call_llm_output_2='Juan'

#Outputs
(str) greet_output='Hola, Juan!'

#Feedback
Correct
'''


def test_sales_agent_golden_instance():
    assert instance_of(sales_agent_example()) == SALES_AGENT_INSTANCE


# OptoPrime's instance for the README agent, in its published format: str
# values unquoted, nodes named by type and counter, a trainable method shown
# as `eval` with its code as the `__code` input. (opto passes the model's
# `self` as a plain object, not a node, so it has no #Inputs line.)
OPTO_SALES_AGENT_INSTANCE = '''
#Instruction
You need to change the <value> of the variables in #Variables to improve the output in accordance to #Feedback.

#Code
call_llm0 = call_llm(system_prompt=str0, args_0=str1, args_1=str2)
eval0 = eval(response=call_llm0, __code=__code0)
call_llm1 = call_llm(system_prompt=str0, args_0=str3, args_1=str2)
eval1 = eval(lang=eval0, user_name=call_llm1, __code=__code1)

#Documentation
[call_llm] Query the LLM with a system prompt, an instruction and the user's message.
[eval] This operator eval(__code, *args, **kwargs) evaluates the code block, where __code is the code (str) and *args and **kwargs are the arguments of the function. The output is the result of the evaluation, i.e., __code(*args, **kwargs).

#Variables
(str) str1=Decide the language
(str) str3=Extract name if it's there
(code) __code0:def decide_lang(self, response):
    """Map the language into a variable"""
    return
(code) __code1:def greet(self, lang, user_name):
    """Produce a greeting based on the language"""
    greeting = "Hola"
    return f"{greeting}, {user_name}!"

#Constraints


#Inputs
(str) str0=You are a sales assistant.
(str) str2=Hola, soy Juan.

#Others
(str) call_llm0=Spanish
(NoneType) eval0=None
(str) call_llm1=Juan

#Outputs
(str) eval1=Hola, Juan!

#Feedback
Correct
'''


def plain_values(lines: list[str], rename: dict[str, str], *, quoted: bool) -> dict[str, tuple[str, str]]:
    """name -> (type, value) of the value lines; our str values are Python literals, opto's are raw."""
    import ast

    found = {}
    for line in lines:
        match = re.match(r"\((\w+)\) (\w+)=(.*)", line)
        if not match:
            continue                     # continuation lines of code values
        type_label, name, value = match.groups()
        if quoted and type_label == "str":
            value = ast.literal_eval(value)
        found[rename.get(name, name)] = (type_label, value)
    return found


def test_sales_agent_carries_the_same_values_as_optoprimes_instance():
    ours = sections(instance_of(sales_agent_example()))
    theirs = sections(OPTO_SALES_AGENT_INSTANCE)
    opto_to_ours = {"str0": "system_prompt", "str1": "instruct1", "str2": "user_query", "str3": "instruct2",
                    "call_llm0": "call_llm_output", "eval0": "decide_lang_output", "call_llm1": "call_llm_output_2",
                    "eval1": "greet_output", "__code0": "decide_lang_code", "__code1": "greet_code"}
    for section in ("Variables", "Others", "Outputs"):
        assert plain_values(ours[section], {}, quoted=True) == \
            plain_values(theirs[section], opto_to_ours, quoted=False), section
    our_inputs = plain_values(ours["Inputs"], {}, quoted=True)
    assert our_inputs.pop("self")[0] == "Agent"      # the one extra input: the object the methods ran on
    assert our_inputs == plain_values(theirs["Inputs"], opto_to_ours, quoted=False)
    code_vars = [line.split(":", 1)[0] for line in ours["Variables"] if line.startswith("(code)")]
    assert code_vars == ["(code) decide_lang_code", "(code) greet_code"]
    assert ours["Feedback"] == theirs["Feedback"]
    assert len(ours["Code"]) == len(theirs["Code"])


def test_sales_agent_has_optoprimes_variables_inputs_and_calls():
    # OptoPrime's instance for the README agent has 4 variables (2 str, 2 code),
    # the system prompt and query as inputs, 4 operator calls, and the greeting
    # as the output.
    parts = sections(instance_of(sales_agent_example()))
    assert [line.split(")")[0] for line in parts["Variables"] if line.startswith("(")] == \
        ["(str", "(str", "(code", "(code"]
    assert len(parts["Code"]) == 4
    assert "(str) greet_output='Hola, Juan!'" in parts["Outputs"]


def test_names_are_unique_valid_identifiers():
    problem = sales_agent_example()
    graph = analyse(problem)
    names = [v.name for v in graph.variables] + [v.name for v in graph.values.values()]
    assert len(names) == len(set(names))
    for name in names:
        assert name.isidentifier() and not keyword.iskeyword(name), name


def test_parameter_named_like_a_keyword_or_path_gets_an_identifier():
    g = TraceGraph()
    v = g.param_value("pkg.mod:class", 3)
    out = g.call("f", {"n": v}, returns=4)
    graph = analyse(g.step_input(feedback={out: "bigger"}, params=[ParamState("pkg.mod:class", "int", 3)]))
    assert graph.variables[0].name == "class_"
    assert graph.names_to_params == {"class_": "pkg.mod:class"}


def test_code_shows_operations_in_execution_order_across_branches():
    g = TraceGraph()
    a = g.param_value("a", 1)
    first = g.call("first", {"v": a}, returns=2)
    second = g.call("second", {"v": a}, returns=3)
    last = g.call("join", {"left": second, "right": first}, returns=5)
    lines = sections(instance_of(g.step_input(feedback={last: "ok"}, params=[ParamState("a", "int", 1)])))["Code"]
    assert [line.split(" = ")[1].split("(")[0] for line in lines] == ["first", "second", "join"]


def test_function_without_docstring_is_documented_by_its_source():
    g = TraceGraph()
    a = g.param_value("a", 1)
    out = g.call("double", {"v": a}, returns=2, source="def double(v):\n    return v * 2\n")
    docs = sections(instance_of(g.step_input(feedback={out: "ok"}, params=[ParamState("a", "int", 1)])))
    assert docs["Documentation"] == ["[double] def double(v):", "    return v * 2"]


def test_non_trainable_parameter_is_an_input_named_after_it():
    g = TraceGraph()
    a = g.param_value("a", 1)
    fixed = g.param_value("app:LIMIT", 10)
    out = g.call("clip", {"v": a, "limit": fixed}, returns=1)
    parts = sections(instance_of(g.step_input(feedback={out: "ok"}, params=[ParamState("a", "int", 1)])))
    assert parts["Inputs"] == ["(int) LIMIT=10"]
    assert parts["Code"] == ["clip_output = clip(v=a, limit=LIMIT)"]


def test_parameter_read_inside_a_body_is_marked_as_a_read_not_an_argument():
    g = TraceGraph()
    prompt = g.param_value("app:PROMPT", "Be brief.")
    query = g.value("hi")
    out = g.call("answer", {"question": query, "app:PROMPT": prompt}, returns="ok", signature="(question)")
    parts = sections(instance_of(g.step_input(feedback={out: "ok"},
                                              params=[ParamState("app:PROMPT", "str", "Be brief.")])))
    assert parts["Code"] == ["answer_output = answer(question=question)  # reads PROMPT"]


def test_exception_is_an_output_with_its_traceback():
    g = TraceGraph()
    a = g.param_value("a", 0)
    g.call("divide", {"d": a}, error={"type": "ZeroDivisionError", "message": "division by zero",
                                      "traceback": "  File app.py, line 3, in divide\n    return 1 / d"})
    problem = g.step_input(feedback={}, params=[ParamState("a", "int", 0)])
    parts = sections(instance_of(problem))
    assert parts["Code"] == ["divide_error = divide(d=a)"]
    assert parts["Outputs"][0] == "(ZeroDivisionError) divide_error=ZeroDivisionError: division by zero"
    assert "    return 1 / d" in parts["Outputs"]


def test_constraints_section_lists_constrained_variables():
    g = TraceGraph()
    a = g.param_value("a", 5)
    out = g.call("f", {"v": a}, returns=6)
    parts = sections(instance_of(g.step_input(feedback={out: "ok"},
                                              params=[ParamState("a", "int", 5, constraint="a > 0")])))
    assert parts["Constraints"] == ["(int) a: a > 0"]


def test_several_feedbacks_are_labelled_with_their_outputs():
    g = TraceGraph()
    a = g.param_value("a", 1)
    left = g.call("left", {"v": a}, returns=1)
    right = g.call("right", {"v": a}, returns=2)
    parts = sections(instance_of(g.step_input(feedback={left: "too small", right: "fine"},
                                              params=[ParamState("a", "int", 1)])))
    assert parts["Feedback"] == ["left_output: too small", "right_output: fine"]
    assert parts["Outputs"] == ["(int) left_output=1", "(int) right_output=2"]


def test_rejected_suggestions_are_fed_back():
    _, problem = numeric_example()
    problem.rejections = ["x: '4.5' is not an int"]
    feedback = sections(instance_of(problem))["Feedback"]
    assert feedback == ["The number needs to be larger.", "Your previous suggestions were rejected:",
                        "- x: '4.5' is not an int"]


def test_memory_is_inserted_as_past_variables_and_feedbacks():
    _, problem = numeric_example()
    memory = [MemoryEntry({"app:x": -3.0}, "The number needs to be larger."),
              MemoryEntry({"app:x": -2.0}, "Still too small.")]
    rendered = render_prompt(analyse(problem), objective=DEFAULT_OBJECTIVE, memory=memory, token_budget=None)
    user = rendered.user
    assert "Below are some variables and their feedbacks you received in the past." in user
    assert user.index('"x": -3.0') < user.index('"x": -2.0') < user.index("Your response:")
    assert '"feedback": "Still too small."' in user
    assert user.rstrip().endswith("Your response:")


def test_user_prompt_follows_optoprimes_layout():
    _, problem = numeric_example()
    rendered = render_prompt(analyse(problem), objective=DEFAULT_OBJECTIVE, memory=[], token_budget=None)
    assert rendered.user == ("\nNow you see problem instance:\n\n================================\n"
                             + NUMERIC_INSTANCE + "\n================================\n\n\nYour response:\n")
    assert rendered.system.startswith("\nYou're tasked to solve a coding/algorithm problem.")
    assert '"suggestion": {\n    <variable_1>: <suggested_value_1>,' in rendered.system
    assert "If no changes or answer are needed, just output TERMINATE." in rendered.system


def test_dunder_methods_keep_their_name_in_code_and_give_readable_output_names():
    g = TraceGraph()
    a = g.param_value("a", 1)
    out = g.call("Agent.__call__", {"query": a}, returns="hi")
    parts = sections(instance_of(g.step_input(feedback={out: "ok"}, params=[ParamState("a", "int", 1)])))
    assert parts["Code"] == ["call_output = __call__(query=a)"]
    assert parts["Documentation"][0].startswith("[__call__] ")


@pytest.mark.parametrize("text, inputs, expected", [
    ("len(items)", 1, "len_output = len(items)"),
    ("prompt.format(name=user)", 2, "format_output = prompt.format(name=user)"),
    ("data['key']", 2, "getitem_output = data[getitem_index]"),
    ("f'{greeting}, {name}!'", 2, "fstring_output = f'{greeting}, {name}!'"),
    ("-value", 1, "neg_output = -value"),
    ("total += step", 2, "add_output = total + step"),
    ("weird ::: text", 1, "op_output = op(op_arg0)  # weird ::: text"),
])
def test_op_site_lines_name_each_operand(text, inputs, expected):
    g = TraceGraph()
    nodes = [g.value(i) for i in range(inputs)]
    out = g.op("", text, nodes, "result")
    problem = g.step_input(feedback={out: "ok"}, params=[])
    assert sections(instance_of(problem))["Code"] == [expected]


def test_feedback_whose_graph_is_gone_still_shows_variables_and_feedback():
    # After a daemon restart the episode's graph is lost; the daemon passes
    # every trainable parameter and the pending feedback.
    g = TraceGraph()
    problem = g.step_input(feedback={("v", 1, 999): "Still too small."},
                           params=[ParamState("app:x", "float", 2.0)])
    parts = sections(instance_of(problem))
    assert parts["Variables"] == ["(float) x=2.0"]
    assert parts["Feedback"] == ["Still too small."]
    assert "Code" in parts and parts["Code"] == []


def test_trainable_call_is_matched_to_its_source_parameter_by_function_id_whatever_the_names():
    # A script runs as __main__, but its source parameter is named after the file.
    g = TraceGraph()
    response = g.value("Spanish")
    out = g.call("Agent.decide_lang", {"response": response}, returns="es", module="__main__",
                 source="    @tracer.bundle(trainable=True)\n" + DECIDE_LANG.split("\n", 1)[1], trainable=True)
    params = [ParamState("agent.Agent.decide_lang", "code", DECIDE_LANG, kind="source",
                         signature="(self, response)", func_id=g.function_id("Agent.decide_lang", "__main__"))]
    parts = sections(instance_of(g.step_input(feedback={out: "ok"}, params=params)))
    assert parts["Code"] == ["decide_lang_output = decide_lang(response=response, __code=decide_lang_code)"]


def test_two_methods_of_the_same_name_are_not_confused():
    g = TraceGraph()
    v = g.value(1)
    out = g.call("B.run", {"v": v}, returns=2, module="app", source="def run(v):\n    return v + 2\n",
                 trainable=True)
    params = [ParamState("app:A.run", "code", "def run(v):\n    return v + 1\n", kind="source", signature="(v)",
                         func_id=g.function_id("A.run")),
              ParamState("app:B.run", "code", "def run(v):\n    return v + 2\n", kind="source", signature="(v)",
                         func_id=g.function_id("B.run"))]
    code_var = {param: name for name, param in analyse(g.step_input(feedback={out: "ok"}, params=params))
                .names_to_params.items()}
    parts = sections(instance_of(g.step_input(feedback={out: "ok"}, params=params)))
    assert parts["Code"] == [f"run_output = run(v=v, __code={code_var['app:B.run']})"]


def test_a_same_named_function_of_another_module_does_not_run_the_code_variable():
    # Only app.greet's source is trainable; lib.greet is a different function
    # with the same name, the same source and the same signature.
    g = TraceGraph()
    name = g.value("Juan")
    source = "def greet(name):\n    return 'Hola ' + name\n"
    mine = g.call("greet", {"name": name}, returns="Hola Juan", module="app", source=source, trainable=True)
    theirs = g.call("greet", {"name": mine}, returns="Hola Hola Juan", module="lib", source=source)
    params = [ParamState("app.greet", "code", source, kind="source", signature="(name)",
                         func_id=g.function_id("greet", "app"))]
    parts = sections(instance_of(g.step_input(feedback={theirs: "one greeting only"}, params=params)))
    assert parts["Code"] == ["greet_output = greet(name=name, __code=greet_code)",
                             "greet_output_2 = greet(name=greet_output)"]


def test_a_nested_function_is_matched_to_its_source_parameter():
    g = TraceGraph()
    x = g.value(2)
    source = "def inner(x):\n    return x + offset\n"
    out = g.call("outer.<locals>.inner", {"x": x}, returns=5, source=source, trainable=True)
    params = [ParamState("app.outer.inner", "code", source, kind="source", signature="(x)", freevars=["offset"],
                         func_id=g.function_id("outer.<locals>.inner"))]
    parts = sections(instance_of(g.step_input(feedback={out: "should be 4"}, params=params)))
    assert parts["Code"] == ["inner_output = inner(x=x, __code=inner_code)"]


def test_a_source_parameter_without_a_function_id_is_shown_but_runs_in_no_call():
    g = TraceGraph()
    v = g.value(1)
    source = "def run(v):\n    return v + 1\n"
    out = g.call("run", {"v": v}, returns=2, source=source, trainable=True)
    params = [ParamState("app:run", "code", source, kind="source", signature="(v)")]
    parts = sections(instance_of(g.step_input(feedback={out: "ok"}, params=params)))
    assert parts["Code"] == ["run_output = run(v=v)"]
    assert parts["Variables"][0] == "(code) run_code:def run(v):"
