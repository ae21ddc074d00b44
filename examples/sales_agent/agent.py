"""The sales-agent greeting from Trace's README, as ordinary code.

    trace-run examples/sales_agent/agent.py

The agent asks an LLM for the user's language and name, then greets them.
Nothing here knows about the optimizer: pyproject.toml beside this file
marks `Agent.decide_lang` and `Agent.greet` as trainable (their source is
optimised) and the two instructions as parameters. The feedback says
whether the greeting was in the user's language; after a step, the running
agent uses the new code and prompts.

The agent's own LLM calls go to OpenAI when OPENAI_API_KEY is set, to
Anthropic when ANTHROPIC_API_KEY is set (model: AGENT_MODEL, or a small
default), or to whatever OPENAI_BASE_URL points at.
"""
import os

import tracer

SYSTEM_PROMPT = "You are a sales agent. Answer with the requested item only."


def call_llm(system: str, instruction: str, user_query: str) -> str:
    """Ask the configured LLM; return its text."""
    prompt = f"{instruction}\n\nMessage: {user_query}"
    if os.environ.get("ANTHROPIC_API_KEY") and not os.environ.get("OPENAI_API_KEY"):
        import anthropic

        client = anthropic.Anthropic()
        reply = client.messages.create(
            model=os.environ.get("AGENT_MODEL", "claude-3-5-haiku-latest"), max_tokens=100,
            system=system, messages=[{"role": "user", "content": prompt}])
        return reply.content[0].text.strip()
    import openai

    client = openai.OpenAI()
    reply = client.chat.completions.create(
        model=os.environ.get("AGENT_MODEL", "gpt-4o-mini"),
        messages=[{"role": "system", "content": system}, {"role": "user", "content": prompt}])
    return (reply.choices[0].message.content or "").strip()


class Agent:
    instruct_language = "Decide the language"
    instruct_name = "Extract name if it's there"

    def __call__(self, user_query: str) -> str:
        response = call_llm(SYSTEM_PROMPT, self.instruct_language, user_query)
        lang = self.decide_lang(response)
        user_name = call_llm(SYSTEM_PROMPT, self.instruct_name, user_query)
        return self.greet(lang, user_name)

    def decide_lang(self, response):
        """Map the language into a variable"""
        return

    def greet(self, lang, user_name):
        """Produce a greeting based on the language"""
        greeting = "Hola"
        return f"{greeting}, {user_name}!"


def feedback_for(greeting: str, language: str) -> str:
    expected = {"en": "Hello", "es": "Hola"}[language]
    if expected in greeting:
        return "Correct"
    return f"Incorrect: the user wrote in {'English' if language == 'en' else 'Spanish'}"


QUERIES = [("Hello, I'm Emma, I'd like to know more about your offer.", "en"),
           ("Hola, soy Juan y quiero saber los precios.", "es")]


def main(rounds: int = 3) -> int:
    agent = Agent()
    for round_ in range(1, rounds + 1):
        verdicts = []
        for query, language in QUERIES:
            greeting = agent(query)
            verdict = feedback_for(greeting, language)
            verdicts.append(verdict)
            print(f"round {round_}: {query!r} -> {greeting!r}: {verdict}")
            if verdict != "Correct":
                tracer.feedback(greeting, verdict)
        if all(v == "Correct" for v in verdicts):
            print("every greeting is in the user's language: done")
            return 0
        try:
            print(f"  step: {tracer.step()}")
        except tracer.StepFailed as exc:
            print(f"  step failed: {exc}")
    return 1


if __name__ == "__main__":
    raise SystemExit(main())
