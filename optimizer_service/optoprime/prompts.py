"""OptoPrime's prompt texts, carried over from opto (microsoft/Trace, opto/optimizers/optoprime.py).

The wording is OptoPrime's, so its published behaviour carries over. One
deliberate difference: opto's output-format prompt is a template written
with doubled braces ("{{") but is sent without formatting, so its LLM sees
"{{ ... }}"; we send the single braces the template meant.
"""
from __future__ import annotations

from typing import Final

REPRESENTATION_PROMPT: Final = """
You're tasked to solve a coding/algorithm problem. You will see the instruction, the code, the documentation of each function used in the code, and the feedback about the execution result.

Specifically, a problem will be composed of the following parts:
- #Instruction: the instruction which describes the things you need to do or the question you should answer.
- #Code: the code defined in the problem.
- #Documentation: the documentation of each function used in #Code. The explanation might be incomplete and just contain high-level description. You can use the values in #Others to help infer how those functions work.
- #Variables: the input variables that you can change.
- #Constraints: the constraints or descriptions of the variables in #Variables.
- #Inputs: the values of other inputs to the code, which are not changeable.
- #Others: the intermediate values created through the code execution.
- #Outputs: the result of the code output.
- #Feedback: the feedback about the code's execution result.

In #Variables, #Inputs, #Outputs, and #Others, the format is:

<data_type> <variable_name> = <value>

If <type> is (code), it means <value> is the source code of a python code, which may include docstring and definitions.
"""

DEFAULT_OBJECTIVE: Final = (
    "You need to change the <value> of the variables in #Variables to improve the output in accordance to #Feedback."
)

OUTPUT_FORMAT_PROMPT: Final = """
Output_format: Your output should be in the following json format, satisfying the json syntax:

{
"reasoning": <Your reasoning>,
"answer": <Your answer>,
"suggestion": {
    <variable_1>: <suggested_value_1>,
    <variable_2>: <suggested_value_2>,
}
}

In "reasoning", explain the problem: 1. what the #Instruction means 2. what the #Feedback on #Output means to #Variables considering how #Variables are used in #Code and other values in #Documentation, #Inputs, #Others. 3. Reasoning about the suggested changes in #Variables (if needed) and the expected result.

If #Instruction asks for an answer, write it down in "answer".

If you need to suggest a change in the values of #Variables, write down the suggested values in "suggestion". Remember you can change only the values in #Variables, not others. When <type> of a variable is (code), you should write the new definition in the format of python code without syntax errors, and you should not change the function name or the function signature.

If no changes or answer are needed, just output TERMINATE.
"""

PROBLEM_TEMPLATE: Final = """
#Instruction
{instruction}

#Code
{code}

#Documentation
{documentation}

#Variables
{variables}

#Constraints
{constraints}

#Inputs
{inputs}

#Others
{others}

#Outputs
{outputs}

#Feedback
{feedback}
"""

USER_PROMPT_TEMPLATE: Final = """
Now you see problem instance:

================================
{problem_instance}
================================

"""

FINAL_PROMPT: Final = """
Your response:
"""

MEMORY_PROMPT: Final = "\nBelow are some variables and their feedbacks you received in the past.\n\n{examples}\n\n"

# Ours, not opto's: the one re-ask when an answer cannot be read at all.
REASK_PROMPT: Final = (
    "Your previous response could not be read: {error}. Answer again with only the JSON object in the "
    "output format above (keys \"reasoning\", \"answer\", \"suggestion\"), or just TERMINATE."
)

# Ours: earlier suggestions that were rejected, appended to #Feedback so the
# LLM does not repeat them.
REJECTIONS_HEADER: Final = "Your previous suggestions were rejected:"
