"""The README's two commands stay true: the test command is exactly what CI runs."""

from conftest import REPO


def _bash_blocks(text: str) -> list[str]:
    blocks, inside, current = [], False, []
    for line in text.splitlines():
        if line.strip() == "```bash":
            inside, current = True, []
        elif inside and line.strip() == "```":
            inside = False
            blocks.append("\n".join(current))
        elif inside:
            current.append(line)
    return blocks


def test_ci_runs_the_readme_test_command():
    main_command, test_command = _bash_blocks((REPO / "README.md").read_text())[:2]
    ci_lines = (REPO / ".ci" / "run").read_text().strip().splitlines()
    assert ci_lines[-1] == test_command
    assert "mde tag" in main_command and "pytest" in test_command
