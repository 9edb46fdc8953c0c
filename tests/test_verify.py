import json
import multiprocessing
import random
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from math_verify import parse
from math_verify import verify as math_verify

from vtd_trl import verify as vtd_verify
from vtd_trl.verify import answer_text, extract_answer, verify, verify_batch

# (completion, gold, expected verdict). Completions box their answer unless the case is about extraction.
EQUIVALENT = [
    # integers
    (r"\boxed{72}", "72"),
    (r"\boxed{-5}", "-5"),
    (r"\boxed{+5}", "5"),
    (r"\boxed{0}", "0"),
    (r"\boxed{ 18 }", "18"),
    (r"\boxed{18}", 18),
    (r"\boxed{123456789012345678901234567890}", "123456789012345678901234567890"),
    # decimals
    (r"\boxed{12.5}", "12.5"),
    (r"\boxed{12.50}", "12.5"),
    (r"\boxed{18.00}", "18"),
    (r"\boxed{0.5}", ".5"),
    (r"\boxed{-0.25}", "-.25"),
    (r"\boxed{3.}", "3"),
    (r"\boxed{2.0}", 2.0),
    # fractions
    (r"\boxed{\frac{1}{2}}", "0.5"),
    (r"\boxed{\dfrac{3}{4}}", r"\frac{3}{4}"),
    (r"\boxed{\tfrac{3}{4}}", "3/4"),
    (r"\boxed{\frac34}", "0.75"),
    (r"\boxed{6/8}", r"\frac{3}{4}"),
    (r"\boxed{-\frac{1}{3}}", r"\frac{-1}{3}"),
    (r"\boxed{\frac{-2}{6}}", r"-\frac{1}{3}"),
    (r"\boxed{\frac{10}{5}}", "2"),
    (r"\boxed{0.333333}", r"\frac{1}{3}"),
    # thousands separators
    (r"\boxed{1,000}", "1000"),
    (r"\boxed{1000}", "1,000"),
    (r"\boxed{1{,}000}", "1000"),
    (r"\boxed{1\,000}", "1000"),
    (r"\boxed{12,345,678}", "12345678"),
    (r"\boxed{1,234.5}", "1234.50"),
    # currency and units
    (r"\boxed{\$18}", "18"),
    (r"\boxed{\$1,250}", "1250"),
    (r"\boxed{\$18.00}", "18"),
    (r"\boxed{18 dollars}", "18"),
    (r"\boxed{18\text{ dollars}}", "18"),
    (r"\boxed{18 \text{dollars}}", "18"),
    (r"\boxed{\text{18 dollars}}", "18"),
    (r"\boxed{5 apples}", "5"),
    (r"\boxed{12 square feet}", "12"),
    (r"\boxed{3\text{ hours}}", "3"),
    (r"\boxed{18\ \text{cm}}", "18"),
    (r"\boxed{18\ dollars}", "18"),
    (r"\boxed{18\,\mathrm{kg}}", "18"),
    (r"\boxed{45^\circ}", "45"),
    (r"\boxed{45^{\circ}}", "45"),
    (r"\boxed{45°}", "45"),
    (r"\boxed{€20}", "20"),
    ("The answer is $18 dollars.", "18"),
    # leading zeros (AIME answers are written 000-999)
    (r"\boxed{007}", "7"),
    (r"\boxed{7}", "007"),
    (r"\boxed{070}", "70"),
    (r"\boxed{000}", "0"),
    # percentages (math-verify accepts both readings)
    (r"\boxed{25\%}", "25"),
    (r"\boxed{25\%}", "0.25"),
    (r"\boxed{50%}", "50"),
    # LaTeX expressions
    (r"\boxed{2x+1}", "1+2x"),
    (r"\boxed{x^2-1}", "(x-1)(x+1)"),
    (r"\boxed{\frac{x}{2}}", r"\frac{1}{2}x"),
    (r"\boxed{2^{10}}", "1024"),
    (r"\boxed{\frac{a+b}{c}}", r"\frac{a}{c}+\frac{b}{c}"),
    (r"\boxed{\left(\frac{1}{2}\right)^2}", r"\frac{1}{4}"),
    (r"\boxed{3 \cdot 4}", "12"),
    (r"\boxed{3\times 4}", "12"),
    (r"\boxed{e^{\ln 5}}", "5"),
    (r"\boxed{\ln(e^3)}", "3"),
    (r"\boxed{\sin^2 x + \cos^2 x}", "1"),
    (r"\boxed{\log_2 8}", "3"),
    (r"\boxed{\binom{5}{2}}", "10"),
    (r"\boxed{5!}", "120"),
    # radicals
    (r"\boxed{\sqrt{8}}", r"2\sqrt{2}"),
    (r"\boxed{\frac{1}{\sqrt{2}}}", r"\frac{\sqrt{2}}{2}"),
    (r"\boxed{\sqrt{2}/2}", r"\frac{\sqrt2}{2}"),
    (r"\boxed{\sqrt[3]{27}}", "3"),
    (r"\boxed{2\sqrt{3}}", r"\sqrt{12}"),
    (r"\boxed{\frac{\sqrt{6}}{3}}", r"\sqrt{\frac{2}{3}}"),
    (r"\boxed{3+2\sqrt{2}}", r"(1+\sqrt{2})^2"),
    (r"\boxed{√2}", r"\sqrt{2}"),
    # pi
    (r"\boxed{2\pi}", r"2\pi"),
    (r"\boxed{\pi \cdot 2}", r"2\pi"),
    (r"\boxed{\frac{\pi}{2}}", r"\frac{1}{2}\pi"),
    (r"\boxed{4\pi r^2}", r"4 r^2 \pi"),
    (r"\boxed{π}", r"\pi"),
    (r"\boxed{36\pi}", r"36 \pi"),
    # sets
    (r"\boxed{\{1,2\}}", r"\{2,1\}"),
    (r"\boxed{\{1, 2, 3\}}", r"\{3,2,1\}"),
    (r"\boxed{\{-1, 1\}}", r"\{1, -1\}"),
    # intervals
    (r"\boxed{[1,2)}", "[1,2)"),
    (r"\boxed{(0, \infty)}", r"(0,\infty)"),
    (r"\boxed{(-\infty, 3]}", r"(-\infty,3]"),
    (r"\boxed{[0,1] \cup [2,3]}", r"[0,1]\cup[2,3]"),
    # tuples
    (r"\boxed{(1,2)}", "(1,2)"),
    (r"\boxed{(3, -4)}", "(3,-4)"),
    (r"\boxed{(1, 2, 3)}", "(1,2,3)"),
    (r"\boxed{\left(\frac{1}{2}, 3\right)}", "(0.5, 3)"),
    # equations and inequalities
    (r"\boxed{x=3}", "3"),
    (r"\boxed{3}", "x=3"),
    (r"\boxed{y = 2x + 1}", "y=1+2x"),
    (r"\boxed{(2, \infty)}", "x > 2"),
    # unicode and invisible characters
    (r"\boxed{−5}", "-5"),
    ("\\boxed{1\u200b2}", "12"),
    ("\\boxed{１２}", "12"),
    ("\\boxed{3\x00}", "3"),
    # extraction paths
    ("Natalia sold 48/2 = 24 clips in May.\n#### 72", "72"),
    ("#### 1,080", "1080"),
    ("So the answer is 42.", "42"),
    ("**The answer is 42**.", "42"),
    ("The answer is **42**.", "42"),
    ("The final answer is: $\\frac{1}{2}$.", "0.5"),
    ("Final Answer: 3.5 dollars.", "3.5"),
    ("First 3 apples, then 4 more, for 7 total", "7"),
    ("The total is 2,500", "2500"),
    ("<think>maybe 5</think>\n\\boxed{7}", "7"),
    ("reasoning here </think> the answer is 9", "9"),
    (r"\boxed{5} then later \boxed{7}", "7"),
    (r"\boxed{7} and a cut-off \boxed{12", "7"),
    (r"\fbox{7}", "7"),
    (r"\boxed 7.", "7"),
    (r"\boxed{\boxed{7}}", "7"),
    ("#### 5\nActually the answer is 6", "5"),  # a GSM8K marker outranks "the answer is"
    (r"\[\boxed{\dfrac{9}{4}}\]", "2.25"),
    ("$$\\boxed{10}$$", "10"),
    # gold written with its own box or GSM8K marker
    (r"\boxed{72}", r"\boxed{72}"),
    (r"\boxed{72}", "#### 72"),
    (r"\boxed{\frac12}", r"$\frac{1}{2}$"),
    # words that change a number's value are applied, not dropped as units
    (r"\boxed{1.5 \text{ million}}", "1500000"),
    (r"\boxed{2 million}", "2,000,000"),
    (r"\boxed{3 dozen}", "36"),
    (r"\boxed{5 squared}", "25"),
    (r"\boxed{3 quarters}", r"\frac{3}{4}"),
    # float golds in positional notation
    (r"\boxed{0.00001}", 1e-05),
    (r"\boxed{5}", np.int64(5)),
    # answer sentences ending in other punctuation
    ("The answer is 42!", "42"),
    ("The answer is $42$, since x = 7.", "42"),
    ("#### Step 1: add\nThe answer is 42.", "42"),
    # the Minerva / lm-eval sentence, and final-answer sentences in words
    ("Final Answer: The final answer is $p - q$. I hope it is correct.", "p - q"),
    ("Final Answer: The final answer is $3\\sqrt{13}$. I hope it is correct.", r"3\sqrt{13}"),
    ("Final Answer: The final answer is $\\pi$. I hope it is correct.", r"\pi"),
    (
        r"Final Answer: The final answer is $(3, \frac{\pi}{2})$. I hope it is correct.",
        r"\left( 3, \frac{\pi}{2} \right)",
    ),
    ("Final Answer: The largest $n$ is 34.", "34"),
    ("Final Answer: The volume of $ABCDEFGH$ is 120. I hope it is correct.", "120"),
    ("Final Answer: Jane started growing Sphere 3 hours ago. I hope it is correct.", "3"),
    (
        r"so $0.05 \cdot 10,200 = \boxed{255}$ in interest. Final Answer: The final answer is $10,455$. I hope it is correct.",
        "10455",
    ),
    ("**Final Answer:** $\\frac{1}{2}$", "0.5"),
    ("**Answer:** $\\frac{1}{2}$", r"\frac12"),
    ("Answer: 1.5 million", "1500000"),
    (r"Final Answer: The final answer is \"$12 $ and $13 $\". I hope it is correct.", r"12\text{ and }13"),
    # LaTeX thousands separators with spaces, and spaced groups in running text
    (r"\boxed{32,\! 349}", "32349"),
    (r"\boxed{11111111100}", r"11,\! 111,\! 111,\! 100"),
    (r"\boxed{11,\! 111,\! 111,\! 100}", "11111111100"),
    (r"\boxed{14 {,} 916}", "14916"),
    (r"The final answer is $11,\! 111,\! 111,\! 100$.", "11111111100"),  # `\!` ends no sentence
    ("The total is 1 000", "1000"),
    # a gold of several boxes joined by "and" or commas is one answer, as is a completion's
    (r"\boxed{1, -2}", r"\(\boxed{1}\) and \(\boxed{-2}\)"),
    (r"\boxed{-2} \quad \text{and} \quad \boxed{1}.", r"\(\boxed{1}\) and \(\boxed{-2}\)."),
    (r"\boxed{1},\boxed{2},\boxed{3}", r"\{1,2,3\}"),
    (r"\boxed{1,2}", r"$\boxed{1}\boxed{2}$"),
    (r"\boxed{2, 3}", r"$x = \boxed{2}$ or $\boxed{3}$"),
    (r"\boxed{3} or \boxed{2}", r"\{2, 3\}"),
    # two forms of one answer joined by "or" are that answer
    (r"\boxed{\frac{639}{40}}", r"$d = \boxed{15\frac{39}{40}},$ or $\boxed{\frac{639}{40}}$ inches."),
    (r"$\boxed{15.975}$ inches", r"$d = \boxed{15\frac{39}{40}},$ or $\boxed{\frac{639}{40}}$ inches."),
    # a gold written as a solution is read down to its stated answer
    (
        r"so the loss is $\boxed{28\%}$.",
        r"It keeps $72 \%$ of its value. Final Answer: The final answer is $28 \%$. I hope it is correct.",
    ),
    # number bases
    (r"\boxed{52_8}", "52_8"),
    (r"\boxed{101010_2}", "52_8"),
    (r"\boxed{1112}", "1112_4"),
    (r"\boxed{A3_{12}}", "A3_{12}"),
    # one letter in both cases keeps its case; otherwise case is folded as math-verify does
    (r"\boxed{N=n}", "N=n"),
    (r"\boxed{X=3}", "x=3"),
    (r"\boxed{circle}", "Circle"),
    # without any marker: the last math span or the last number, whichever ends later
    (r"Therefore $x \geq 5$ is the solution.", "x >= 5"),
    (r"$\frac13 $", "1/3"),
    (
        r"Special matrix: $ \left[\begin{array}{cc}1 & 2 \\3 & 4\end{array}\right] $",
        r"\begin{pmatrix}1 & 2 \\3 & 4\end{pmatrix}",
    ),
    (r"We have $x = 3$, so there are 12 apples", "12"),
    (r"It is \frac{10}{9}", "10/9"),
    ("It comes to .4", "0.4"),
    ("Soucis : 2,74 $ a..", "2.74"),
    # an escaped backslash (a matrix row's end) followed by a space is not a LaTeX space
    (r"\boxed{\begin{pmatrix}1 & 0 \\ 0 & 1\end{pmatrix}}", r"\begin{pmatrix}1&0\\0&1\end{pmatrix}"),
    # a completion that is only an expression is that expression, not its last number
    ("3+2", "5"),
    ("x^2+2x+1", "(x+1)^2"),
    ("(2,4)", "(2,4)"),
    ("[2,5)", "[2,5)"),
    ("odd", r"\text{odd}"),
    (r"\sqrt8", r"2\sqrt{2}"),
    ("y = 2x + 3.", "2x+3"),
    # scientific notation is a power of ten, not Euler's e
    (r"\boxed{3.54e-07}", "3.54*10^{-7}"),
    (r"\boxed{3.54e-07}", r"3.54\times10^{-7}"),
    (r"\boxed{3.54 \times 10^{-7}}", "0.000000354"),
    (r"\boxed{1.2E5}", "120000"),
    (r"\boxed{2.314814814815 \times 10^{-3}}", r"\frac{1}{432}"),
    # a box used as an operator of the problem's notation is not the answer; the answer stated after it is
    (r"By the definition, $\boxed{12}=6$ since $1+2+3=6$. Therefore, $6$ is our answer.", "6"),
    # a repeating decimal in words or LaTeX is its fraction, alone or inside a tuple (the last repeated block repeats)
    (r"\boxed{(2, 0.1666 \text{ repeating})}", r"\left(2, \frac{1}{6}\right)"),
    (r"The answer is (2, 0.1666 repeating).", r"(2, \frac16)"),
    (r"\boxed{0.\overline{3}}", r"\frac13"),
    (r"\boxed{0.1\overline{6}}", r"\frac16"),
    (r"\boxed{0.142857 \text{ repeating}}", r"\frac{1}{7}"),
    (r"\boxed{0.333\ldots}", r"\frac13"),
    # equivalence that needs algebra: decimal coefficients, powers under a root, trigonometric identities, i
    (r"\boxed{0.1*(2.0*s^2+6.0*s-25.0)/s}", "(2*s^2+6*s-25)/(10*s)"),
    (r"\boxed{\sqrt[3]{(ab)^2}}", "a^{2/3}b^{2/3}"),
    (r"\boxed{\sqrt[3]{a^2b^2}}", r"\sqrt[3]{(ab)^2}"),
    (r"\boxed{\frac{\sin(x/2)}{1+\tan x\tan(x/2)}}", r"\sin(x/2)\cos x"),
    (r"\boxed{\sin(90^\circ - x)}", r"\cos x"),
    (r"\boxed{1+2i}", "i(2-i)"),
    # SymPy's syntax is read as SymPy means it
    ("Eq(x**2/4 + y**2/3, 1)", r"\frac{x^2}{4}+\frac{y^2}{3}=1"),
    (r"\boxed{sqrt(2)/2}", r"\frac{\sqrt{2}}{2}"),
    (r"\boxed{Rational(1, 3)}", r"\frac13"),
    # a gold decimal of four significant digits or more is rounded: a more precise answer within its last digit matches
    (r"\boxed{3.14159}", "3.1416"),
    (r"\boxed{40\pi}", "125.663"),
    (r"\boxed{\frac{1}{3}}", "0.3333"),
    (r"\boxed{\frac13, \sqrt3, \pi}", "1/3, 1.732, 3.1416"),
    (r"\boxed{x + \sqrt2 i}", "x + 1.414i"),
    # mixed numbers, times of day, units with exponents, choices with a reason, function definitions
    (r"918\frac{1}{2}", "918.5"),
    (r"\boxed{1 1/2}", "1.5"),
    (r"\boxed{2\frac58}", "2.625"),
    (r"\boxed{20:34}", r"8:34 \text{ p.m.}"),
    (r"\boxed{20:34:00}", "20:34"),
    (r"\boxed{10\text{ cm}^2}", "10"),
    ("10 cm^2", "10"),
    ("C. x = 42", "C"),
    ("C", "C. x = 42"),
    (r"The final answer is $\boxed{\text{(D) } 17}$", "D"),
    ("Answer: (B) 12", r"\text{(B)}"),
    (r"\boxed{f(x) = 2x + 3}", "y = 2x + 3"),
    (r"\boxed{\sqrt[3]8}", "2"),
    # the answer tags of R1-style prompts, and the empty set's two symbols
    ("<think>x is 1</think><answer>x^2+1</answer>", "x^2+1"),
    (r"<think>...</think>\n<answer>The answer is $\frac{1}{2}$</answer>", "0.5"),
    (r"\boxed{\emptyset}", r"\varnothing"),
    # a whole number in words, and a line opening "Answer is"
    (r"\boxed{42}", "forty-two"),
    ("Answer is forty two.", "42"),
    (r"Some work. \boxed{43}.", "Answer is forty three."),
    (r"\boxed{-3}", "minus three"),
    # a list against a one-column or one-row matrix is that vector, either way round; an interval against an interval
    (r"\boxed{\begin{matrix} \frac12 \\ 1 \end{matrix}}", "[0.5, 1]"),
    (r"\boxed{(0.5, 1)}", r"\begin{pmatrix} \frac12 \\ 1 \end{pmatrix}"),
    (r"\boxed{\begin{bmatrix} -1 & \sqrt{2} & 3 \end{bmatrix}}", r"(-1, \sqrt2, 3)"),
    (r"\boxed{[1/2, 1]}", "[0.5, 1]"),
    (r"\boxed{[0.5, 1]}", r"\left[\begin{array}{c} \frac12 \\ 1 \end{array}\right]"),
    # equations whose sides are numbers: a gold number of four significant digits or more is rounded, others exact
    (r"\boxed{\begin{cases} a+b=\frac12 \\ a-b=\sqrt3 \end{cases}}", r"\begin{cases} a+b=0.5\\ a-b=1.732\end{cases}"),
    (r"\boxed{\begin{cases} a-b=\sqrt3 \\ a+b=0.5 \end{cases}}", r"\begin{cases} a+b=0.5\\ a-b=1.732\end{cases}"),
    (r"\boxed{a+b=0.5, a-b=\sqrt{3}}", r"\begin{cases} a+b=0.5\\ a-b=1.732\end{cases}"),
    (r"\boxed{x=\sqrt3}", "x=1.7321"),
    (r"\boxed{2x+1=\pi}", "2x+1=3.1416"),
    (r"\boxed{x=\frac12, y=\sqrt3}", "x=0.5, y=1.732"),
    (r"\boxed{\begin{cases} x=\frac12 \\ y=\sqrt3 \end{cases}}", "x=0.5, y=1.732"),
]

NOT_EQUIVALENT = [
    (r"\boxed{71}", "72"),
    (r"\boxed{-72}", "72"),
    (r"\boxed{7.2}", "72"),
    (r"\boxed{12.51}", "12.5"),
    (r"\boxed{2.000001}", "2"),
    (r"\boxed{0.33}", r"\frac{1}{3}"),
    (r"\boxed{\frac{1}{3}}", "0.33"),
    (r"\boxed{\frac{2}{3}}", r"\frac{1}{3}"),
    (r"\boxed{1/2}", "2"),
    (r"\boxed{1,001}", "1000"),
    (r"\boxed{100}", "1,000"),
    (r"\boxed{\$17}", "18"),
    (r"\boxed{17 dollars}", "18"),
    (r"\boxed{2 pi}", "2"),
    (r"\boxed{8}", "007"),
    (r"\boxed{26\%}", "25"),
    (r"\boxed{2x+2}", "2x+1"),
    (r"\boxed{x^2+1}", "(x-1)(x+1)"),
    (r"\boxed{\sqrt{3}}", r"\sqrt{2}"),
    (r"\boxed{\sqrt{2}}", r"2\sqrt{2}"),
    (r"\boxed{3\pi}", r"2\pi"),
    (r"\boxed{3.14}", r"\pi"),
    (r"\boxed{\{1,2\}}", r"\{1,3\}"),
    (r"\boxed{\{1,2\}}", r"\{1,2,3\}"),
    (r"\boxed{[1,2]}", "[1,2)"),
    (r"\boxed{(1,2]}", "[1,2]"),
    (r"\boxed{(2,1)}", "(1,2)"),
    (r"\boxed{(1,2)}", "(1,2,3)"),
    (r"\boxed{x=4}", "3"),
    (r"\boxed{y=2x}", "y=2x+1"),
    (r"\boxed{e}", r"\pi"),
    (r"\boxed{\infty}", "5"),
    # no answer at all
    ("I do not know.", "5"),
    ("", "5"),
    (r"\boxed{}", "5"),
    (r"\boxed{\text{dollars}}", "5"),
    ("<think>the answer is 5", "5"),
    ("<think>reasoning \\boxed{5} and then the model was cut off", "5"),
    # the answer is the last one written, not any earlier one
    (r"\boxed{5} no wait \boxed{6}", "5"),
    ("<think>\\boxed{5}</think> so \\boxed{6}", "5"),
    ("I computed 5 and then 6", "5"),
    ("Numbers 5\n#### 6", "5"),
    (r"\boxed{5} \boxed 6", "5"),
    (r"\boxed{\text{(A)}}", r"\text{(B)}"),
    (r"\boxed{72}", "#### 27"),
    # a number followed by a word that changes its value is not that number
    (r"\boxed{5 \text{ squared}}", "5"),
    (r"\boxed{2 thirds}", "2"),
    (r"\boxed{5\mathrm{i}}", "5"),
    (r"\boxed{1 \text{ million}}", "1"),
    # exact decimals beyond the 6 digits math-verify rounds to
    (r"\boxed{0.3333334}", "0.3333333"),
    # a think block reopened and never closed, a numbered markdown heading, a float gold math-verify would misread
    (r"<think>ok</think><think>\boxed{5}", "5"),
    ("#### 2. Compute the total\nWe get 7 apples.", "2"),
    (r"\boxed{e-5}", 1e-05),
    # the Minerva sentence and answer sentences in words
    ("Final Answer: The final answer is $p - q$. I hope it is correct.", "q - p"),
    ("Final Answer: The largest $n$ is 35.", "34"),
    (r"The final answer is $\boxed{255}$.", "10455"),
    (r"Final Answer: The final answer is $10,455$. I hope it is correct. \boxed{255}", "10455"),  # the last one stated
    ("#### 5\nThe final answer is 6", "5"),
    # thousands groups: no leading 0 group, no spaced comma outside LaTeX's `,\!`
    (r"\boxed{0,111}", "111"),
    (r"\boxed{32,\! 349}", "32348"),
    (r"\boxed{1, 000}", "1000"),
    # one box of a gold with several is not the answer
    (r"\boxed{-2}", r"\(\boxed{1}\) and \(\boxed{-2}\)"),
    (r"\boxed{1}", r"\(\boxed{1}\) and \(\boxed{-2}\)"),
    (r"\boxed{5}, no wait, \boxed{6}", "5"),
    (r"\boxed{5} or \boxed{6}", "6"),  # a hedge between two answers is neither
    (r"\boxed{5} or \boxed{6}", "5"),
    # case and bases are part of the answer
    (r"\boxed{N=n+1}", "N=n"),
    (r"\boxed{n=N+1}", "N=n"),
    (r"\boxed{52_9}", "52_8"),
    (r"\boxed{42}", "52_8"),
    (r"\boxed{A}", "A_1"),  # a subscripted point, not a number in base 1
    # digits inside a word are no number; a later math span is the answer, not a number inside it
    ("The code is AZYUK2A", "2"),
    ("$-[0,1)$", "1"),
    # a bare expression is read whole; prose around numbers is not a bare expression
    ("3+2", "2"),
    ("3+2", "6"),
    # scientific notation: a different power of ten, or e without a number before it
    (r"\boxed{3.54e-06}", r"3.54\times10^{-7}"),
    (r"\boxed{2e}", "2"),
    # the box used as an operator does not count, and nor does its value
    (r"By the definition, $\boxed{12}=6$ since $1+2+3=6$. Therefore, $6$ is our answer.", "12"),
    # a decimal not said to repeat is that decimal; the last repeated block repeats, not the whole tail
    (r"\boxed{(2, 0.1666)}", r"(2, \frac16)"),
    (r"\boxed{0.1666 \text{ repeating}}", r"\frac{1666}{9999}"),
    (r"\boxed{3.14159\ldots}", r"\frac{314159}{99999}"),
    # different expressions stay different at random points
    (r"\boxed{\frac{\sin(x/2)}{1+\tan x\tan(x/2)}}", r"\sin(x/2)\sin x"),
    (r"\boxed{0.1*(2.0*s^2+6.0*s-25.0)/s}", "(2*s^2+6*s-24)/(10*s)"),
    (r"\boxed{x+1}", "x+1.0000001"),
    (r"\boxed{2x+3}", "2y+3"),
    (r"\boxed{1+3i}", "i(2-i)"),
    # two SymPy equations with equal right sides are not equal (math-verify compares their last arguments)
    ("Eq(x**2/16 + y**2/12, 1)", "Eq(x**2/4 + y**2/3, 1)"),
    (r"\boxed{Eq(x**2/16 + y**2/12, 1)}", r"\frac{x^2}{4}+\frac{y^2}{3}=1"),
    # the gold's rounding: a less precise answer, a gold of 3 significant digits, a rounded answer to an exact gold
    (r"\boxed{2}", "2.0001"),
    (r"\boxed{3.14159}", "3.15"),
    (r"\boxed{3.1426}", "3.1416"),
    (r"\boxed{125.663}", r"40\pi"),
    (r"\boxed{1/3, 1.732, 3.1416}", r"\frac13, \sqrt3, \pi"),
    (r"\boxed{\frac13, \sqrt3, \pi}", "1/3, 1.734, 3.1416"),
    (r"\boxed{x + \sqrt3 i}", "x + 1.414i"),
    (r"\boxed{8:34}", r"8:34 \text{ p.m.}"),
    ("B. x = 42", "C"),
    (r"\boxed{\text{(C)}+1}", r"\text{(C)}"),
    ("<answer>42</answer> or maybe 43", "43"),
    (r"\boxed{42}", "forty-three"),
    (r"\boxed{1}", "one half"),
    # a wrong vector, a vector of another length, an open interval for a closed one
    (r"\boxed{(0.5, 2)}", r"\begin{pmatrix} \frac12 \\ 1 \end{pmatrix}"),
    (r"\boxed{[0.5, 1, 2]}", r"\begin{pmatrix} \frac12 \\ 1 \end{pmatrix}"),
    (r"\boxed{\begin{pmatrix} \frac12 \\ 2 \end{pmatrix}}", "[0.5, 1]"),
    (r"\boxed{(0.5, 1)}", "[0.5, 1]"),
    # a rounded value for an exact gold, a wrong rounded value, a wrong exact value, another equation
    (r"\boxed{\begin{cases} a+b=0.5\\ a-b=1.732\end{cases}}", r"\begin{cases} a+b=\frac12 \\ a-b=\sqrt3 \end{cases}"),
    (r"\boxed{\begin{cases} a+b=0.5\\ a-b=1.74\end{cases}}", r"\begin{cases} a+b=0.5\\ a-b=1.732\end{cases}"),
    (r"\boxed{\begin{cases} a+b=0.51\\ a-b=1.732\end{cases}}", r"\begin{cases} a+b=0.5\\ a-b=1.732\end{cases}"),
    (r"\boxed{\begin{cases} a+b=0.5\\ a+2b=\sqrt3\end{cases}}", r"\begin{cases} a+b=0.5\\ a-b=1.732\end{cases}"),
    (r"\boxed{a+b=0.5}", r"\begin{cases} a+b=0.5\\ a-b=1.732\end{cases}"),
    (r"\boxed{x=1.7321}", r"x=\sqrt3"),
    (r"\boxed{x=1.7331}", "x=1.7321"),
    (r"\boxed{y=\sqrt3}", "x=1.7321"),
    (r"\boxed{x=0.5, y=1.732}", r"x=\frac12, y=\sqrt3"),
    (r"\boxed{x=\frac12, y=\sqrt2}", "x=0.5, y=1.732"),
    (r"\boxed{[0.5, 2]}", r"\left[\begin{array}{c} \frac12 \\ 1 \end{array}\right]"),
]

UNPARSEABLE_GOLD = [
    (r"\boxed{5}", ""),
    (r"\boxed{5}", "   "),
    (r"\boxed{5}", None),
    (r"\boxed{5}", "$$"),
    (r"\boxed{5}", r"\boxed{}"),
    (r"\boxed{5}", "####"),
    (r"\boxed{5}", "9^{9^{9^9}}"),
    (r"\boxed{?}", "?"),  # math-verify only keeps the raw string: it would match nothing but itself
    (r"\boxed{\frac{}{}}", r"\frac{}{}"),
    ("no answer", ""),
]

VERIFY_CASES = (
    [(completion, gold, True) for completion, gold in EQUIVALENT]
    + [(completion, gold, False) for completion, gold in NOT_EQUIVALENT]
    + [(completion, gold, None) for completion, gold in UNPARSEABLE_GOLD]
)


def test_table_is_large():
    assert len(VERIFY_CASES) >= 150


@pytest.mark.parametrize("completion, gold, expected", VERIFY_CASES)
def test_verify(completion, gold, expected):
    assert verify(completion, gold) is expected


def test_verify_batch_keeps_order_and_matches_verify():
    completions, golds, expected = zip(*VERIFY_CASES)
    assert verify_batch(list(completions), list(golds), num_workers=2) == list(expected)


def test_verify_batch_length_mismatch():
    with pytest.raises(ValueError, match="2 completions and 1 golds"):
        verify_batch(["1", "2"], ["1"])


def test_verify_rejects_wrong_types():
    with pytest.raises(TypeError, match="completion must be a string, got list"):
        verify([{"content": "1"}], "1")
    with pytest.raises(TypeError, match="gold answer must be a string or a number, got bool"):
        verify("1", True)


EXTRACTION_CASES = [
    (r"so \boxed{\frac{a}{b^{2}}} done", r"\frac{a}{b^{2}}"),
    (r"\boxed{\{1,2\}}", r"\{1,2\}"),
    (r"\boxed{a} \boxed{b}", "b"),
    (r"\boxed{a} \boxed{b", "a"),
    (r"\boxed{\boxed{7}}", "7"),
    (r"\boxed{1}, " * 20_000 + r"\boxed{2}", ", ".join(["1"] * 20_000 + ["2"])),
    (r"\boxed{\left\{ x \right\}}", r"\left\{ x \right\}"),
    (r"\boxed{$5$}", "5"),
    (r"\boxed 42 apples", "42"),
    (r"\fbox{3}", "3"),
    (r"\boxed{}", None),
    (r"It is 5. \boxed{}", None),  # an empty box states nothing, and nothing before it counts
    (r"\boxed{} Final Answer: 5", "5"),
    ("Some text\n#### 1,234\n", "1,234"),
    ("#### $5$", "5"),
    ("#### 5\n#### 6", "6"),
    ("The answer is 3.5. Let me double check: 3.5.", "3.5"),
    ("The answer is $\\frac{1}{2}$.", r"\frac{1}{2}"),
    ("the answer is: 17", "17"),
    ("FINAL ANSWER: x = 2", "x = 2"),
    ("x-5 and then = -7", "-7"),
    ("pay 1,234.50 now", "1,234.50"),
    ("eat 3/4 of it", "3/4"),
    ("It is −4", "-4"),
    ("no digits here", None),
    ("", None),
    ("<think>42</think>", None),
    ("<think>41</think>The result is 42", "42"),
    ("<think>41</think>mid</think>43", "43"),
    ("<think>unfinished 41", None),
    ("prompt opened the block; 41 </think> 42", "42"),
    ("<think>a</think>\\boxed{7}<think>", "7"),
    # which stated answer wins: the last one in the text, whatever its form
    ("Final Answer: The final answer is $p - q$. I hope it is correct.", "p - q"),
    (r"$\boxed{255}$ So she has $10,455. Final Answer: The final answer is $10,455$. I hope it is correct.", "10,455"),
    (r"The final answer is $\boxed{24}$.", "24"),
    ("**Final Answer**\n\\boxed{004}", "004"),
    ("#### 5\nThe final answer is 6", "6"),
    ("#### 5\nActually the answer is 6", "5"),
    ("**Answer:** 42", "42"),
    ("Answer: $\\frac{1}{2}$", r"\frac{1}{2}"),
    ('The final answer is "12 and 13".', "12 and 13"),
    ("Final Answer: the total number of apples in the basket", None),
    # runs of boxes
    (r"\(\boxed{1}\) and \(\boxed{-2}\)", "1, -2"),
    (r"\boxed{(2, 2)} \quad \text{and} \quad \boxed{(6, 2)}", "(2, 2), (6, 2)"),
    (r"\boxed{5}, no wait, \boxed{6}", "6"),
    (r"\boxed{15\frac{39}{40}}, or \boxed{\frac{639}{40}}", r"15\frac{39}{40}, \frac{639}{40}"),
    (r"\boxed{1} papers and \boxed{2} bins", "2"),
    # no marker: the last math span or the last number, whichever ends later
    ("We get $x = 3$.", "x = 3"),
    ("We get $x = 3$, so 4 apples", "4"),
    ("It is 1 000", "1000"),
    ("about 2,74 litres", "2.74"),
    ("so .4", ".4"),
    ("It is \\frac{10}{9}", r"\frac{10}{9}"),
    ("The code is AZYUK2A", None),
    # a completion that is only an expression is its answer
    ("3+2", "3+2"),
    ("x^2+2x+1.", "x^2+2x+1"),
    (r"\sin x \cos x", r"\sin x \cos x"),
    ("odd", "odd"),
    ("1 000", "1000"),
    (r"$\boxed{12}=6$, so $6$ is the value.", "6"),
    (r"$\boxed{12}=6$ and \boxed{7}", "7"),
    ("10 cm^2", "10 cm^2"),
    ("C. x = 42", "C. x = 42"),
    ("Answer is forty two.", "forty two"),
    ("Work first.\nAnswer is $x=3$", "x=3"),
]


@pytest.mark.parametrize("text, expected", EXTRACTION_CASES)
def test_extract_answer(text, expected):
    assert extract_answer(text) == expected


DATA = Path(__file__).parent / "data"

# Math-Verify's own test cases (tests/data/math_verify/cases.jsonl, by line number) on which `verify(pred, gold)`
# gives another verdict than the test expects, by reason. No reason is a defect: each is an option vtd_trl does not
# expose or a documented rule (README, "Extraction rules").
PEER_DISAGREEMENTS = {
    # `match_types=["expr"]`: only math-verify's plain-text extraction reads "1,22" as 1.22; in LaTeX (math-verify's
    # too) and in vtd_trl a comma separates list items or thousands.
    "decimal comma in a gold (plain-expression extraction only)": [7],
    "inline math broken across lines (`Answer $ \\n 9 \\n $`): vtd_trl reads the last number, 9": [32, 33],
    "`precision=2` (math-verify's float_rounding; vtd_trl keeps its default, 6 digits)": [134, 140],
    "`allow_set_relation_comp=True` (not exposed)": [187],
    "`strict=False` (not exposed: f(x) is not f(y))": [269],
    "boxes with other text between them: only the last run of boxes joined by commas, 'and' or 'or' is the answer": [
        192,
        239,
        249,
        252,
    ],
    # math-verify compares such golds character for character; vtd_trl skips them (verdict None, see UNPARSEABLE_GOLD).
    "a gold that math-verify cannot parse into mathematics (`\\pm` in a list; a form feed in the test's string)": [
        131,
        232,
    ],
}


def test_agrees_with_math_verify_test_suite():
    cases = [json.loads(line) for line in (DATA / "math_verify" / "cases.jsonl").read_text().splitlines()]
    assert len(cases) == 269
    # Verdicts, not speed, are under test here: a generous timeout keeps a loaded machine from flipping one.
    verdicts = verify_batch([case["pred"] for case in cases], [case["gold"] for case in cases], timeout=10.0)
    disagreements = {
        line: (case["source"], case["gold"][-80:], case["pred"][-80:], verdict)
        for line, (case, verdict) in enumerate(zip(cases, verdicts), start=1)
        if (verdict is True) != bool(case["expected"])
    }
    explained = sorted(line for lines in PEER_DISAGREEMENTS.values() for line in lines)
    assert {line: disagreements.get(line) for line in sorted(disagreements)} == {
        line: disagreements.get(line) for line in explained
    }
    assert 1 - len(disagreements) / len(cases) >= 0.95  # 256 of 269 agree: 95.2%


# The formats models write a final answer in; `%s` is the gold answer as written.
ANSWER_FORMATS = {
    "boxed": "So the answer is $\\boxed{%s}$.",
    "the final answer is": "The final answer is $%s$.",
    "Minerva sentence": "Final Answer: The final answer is $%s$. I hope it is correct.",
    "bold answer": "**Answer:** $%s$",
}


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _wrong(answer: str) -> str:
    # A wrong answer close to the gold: its first digit changed (`\frac{1}{2}` -> `\frac{2}{2}`), or `+1` appended.
    digit = re.search(r"[0-9]", answer)
    if digit is None:
        return answer + "+1"
    return answer[: digit.start()] + str((int(digit.group()) + 1) % 10) + answer[digit.end() :]


def test_real_gold_answers_verify_against_themselves_and_not_a_wrong_answer():
    golds = [row["answer"] for row in _jsonl(DATA / "math500" / "answers.jsonl")]
    golds += [row["answer"] for name in ("aime24", "amc23") for row in _jsonl(DATA / "competitions" / f"{name}.jsonl")]
    assert len(golds) == 500 + 30 + 40
    completions = []
    for gold in golds:
        text = answer_text(gold)  # AMC answers are floats (27.0): a model writes 27
        completions += [(name, template % text, gold, True) for name, template in ANSWER_FORMATS.items()]
        completions.append(("wrong answer", ANSWER_FORMATS["boxed"] % _wrong(text), gold, False))
    verdicts = verify_batch([c[1] for c in completions], [c[2] for c in completions], timeout=10.0)
    failures = [
        (name, completion, gold)
        for (name, completion, gold, want), got in zip(completions, verdicts)
        if got is not want
    ]
    assert failures == []
    assert len(verdicts) == 570 * 5


def _math_verify_verdict(completion: str, gold: str) -> bool:
    return math_verify(parse(f"${gold}$"), parse(completion))


def _random_number(rng: random.Random) -> str:
    kind = rng.choice(["int", "int", "decimal", "fraction", "latex_fraction"])
    if kind == "int":
        return str(rng.randint(-50, 500))
    if kind == "decimal":
        return f"{rng.randint(0, 60)}.{rng.randint(0, 99):0{rng.choice([1, 2])}d}"
    numerator, denominator = rng.randint(-20, 40), rng.randint(1, 12)
    return f"{numerator}/{denominator}" if kind == "fraction" else rf"\frac{{{numerator}}}{{{denominator}}}"


def test_numeric_path_agrees_with_math_verify():
    # The exact path decides these in-process; math-verify (run here directly, in the main thread) is the reference.
    rng = random.Random(0)
    golds = [_random_number(rng) for _ in range(200)]
    preds = [gold if rng.random() < 0.3 else _random_number(rng) for gold in golds]
    completions = [rf"The result is \boxed{{{pred}}}." for pred in preds]
    ours = verify_batch(completions, golds)
    reference = [_math_verify_verdict(completion, gold) for completion, gold in zip(completions, golds)]
    disagreements = [(c, g, o, r) for c, g, o, r in zip(completions, golds, ours, reference) if o != r]
    assert disagreements == []
    assert 40 <= sum(ours) <= 120  # both verdicts are well represented


# Inputs that hang or crash naive verification. Each must come back within the timeout with a verdict.
ADVERSARIAL = {
    "exponent tower": (r"\boxed{9^{9^{9^9}}}", "5", False),
    "exponent tower, gold": (r"\boxed{5}", r"9^{9^{9^{9}}}", None),
    "power with a huge exponent": (r"\boxed{2^{123456789}}", "5", False),
    "scientific notation with a huge exponent": (r"\boxed{1e99999}", "5", False),
    "scientific notation with a large exponent": (r"\boxed{9.9e9999}", "5", False),
    "python power operator": (r"\boxed{9**9**9**9}", "5", False),
    "factorial of a huge number": (r"\boxed{100000000!}", "5", False),
    "factorial of an expression": (r"\boxed{(10^{6})!}", "5", False),
    "deep brace nesting": ("\\boxed{" + "{" * 5000 + "1" + "}" * 5000 + "}", "1", False),
    "deep parenthesis nesting": (r"\boxed{" + "(" * 3000 + "1" + ")" * 3000 + "}", "1", False),
    "a megabyte of digits": ("1" * 1_000_000, "5", False),
    "a megabyte of boxed digits": (r"\boxed{" + "7" * 1_000_000 + "}", "5", False),
    "thousands of boxes": (r"\boxed{1} " * 20_000 + r"\boxed{5}", "5", True),
    "thousands of unclosed boxes": (r"\boxed{" * 20_000, "5", False),
    "unicode soup": ("\\boxed{" + "".join(map(chr, range(0x2200, 0x2300))) + "}", "5", False),
    "control characters": ("\\boxed{\x00\x01\x025\x7f\x1b}", "5", True),
    "unbalanced latex": (r"\boxed{\frac{1}{2}}} \left( \right] \sqrt{", "0.5", True),
    "unbalanced latex in the box": (r"\boxed{\frac{1}{2}\left(}", "0.5", False),
    "huge matrix": (r"\boxed{\begin{pmatrix}" + " & ".join(["1"] * 400) + r"\end{pmatrix}}", "5", False),
    "long symbolic sum": (r"\boxed{" + "+".join(f"x_{{{i}}}^{{{i}}}" for i in range(150)) + "}", "5", False),
    "a megabyte of digit groups": ("123 " * 250_000, "5", False),
    "a megabyte of dollar signs": ("$" * 1_000_000 + "5", "5", True),
    "unclosed display math openers": ("\\[" * 300_000 + " so 5", "5", True),
    "unclosed inline math openers": ("\\(" * 300_000 + "\n5", "5", True),
    "thousands of answer sentences": ("Final Answer: 3\nThe answer is 4.\n" * 20_000, "3", True),
    "many nested radicals": (r"\boxed{" + r"\sqrt{" * 30 + "2" + "}" * 30 + "}", "2", False),
}


@pytest.mark.parametrize("name", list(ADVERSARIAL))
def test_adversarial_input_is_bounded(name):
    completion, gold, expected = ADVERSARIAL[name]
    verify(r"\boxed{\sqrt{2}}", r"\sqrt{2}")  # the worker is started outside the timed region
    start = time.monotonic()
    verdict = verify(completion, gold, timeout=2.0)
    elapsed = time.monotonic() - start
    assert verdict is expected
    assert elapsed < 2.5


def test_hard_deadline_kills_a_stuck_worker():
    # 7^(7^9) passes the pre-filter only if the filter is bypassed: call the worker pool directly, which is what
    # protects against inputs the filter does not know. The worker is stuck in C-level integer arithmetic, where no
    # signal-based timeout fires; only killing it returns control.
    from vtd_trl.verify import _get_pool

    pool = _get_pool()
    verify(r"\boxed{\sqrt{2}}", r"\sqrt{2}")
    start = time.monotonic()
    verdict = pool.check("5", "7^{7^{9}}", timeout=1.0, max_workers=1)
    assert verdict is False
    assert time.monotonic() - start < 1.5
    # The pool replaced the killed worker and still answers.
    assert verify(r"\boxed{\sqrt{8}}", r"2\sqrt{2}") is True


def test_worker_that_cannot_start_is_reported(monkeypatch):
    # An environment problem (math-verify missing, say) must surface, not read as "every answer is wrong".
    monkeypatch.setattr(vtd_verify, "_WORKER_BOOT", "raise SystemExit(3)")
    monkeypatch.setattr(vtd_verify, "_pool", None)
    with pytest.raises(RuntimeError, match=r"did not start within 120 s \(exit code: 3; .*math-verify\[antlr4-13-2\]"):
        verify(r"\boxed{\sqrt{2}}", r"\sqrt{2}")


def test_bounded_in_a_worker_thread():
    # math-verify's own timeouts raise in a non-main thread; ours must still hold there.
    results = {}

    def run():
        start = time.monotonic()
        results["tower"] = verify(r"\boxed{(10^{6})!}", "5", timeout=1.0)
        results["tower_time"] = time.monotonic() - start
        results["radical"] = verify(r"\boxed{\frac{1}{\sqrt{2}}}", r"\frac{\sqrt2}{2}")

    verify(r"\boxed{\sqrt{2}}", r"\sqrt{2}")
    thread = threading.Thread(target=run)
    thread.start()
    thread.join(timeout=30)
    assert results["tower"] is False
    assert results["tower_time"] < 1.5
    assert results["radical"] is True


def test_concurrent_threads_get_their_own_verdicts():
    cases = [(rf"\boxed{{\sqrt{{{n * n}}}}}", str(n if n % 3 else n + 1), n % 3 != 0) for n in range(1, 13)]
    results = [None] * len(cases)

    def run(index):
        completion, gold, _ = cases[index]
        results[index] = verify(completion, gold)

    threads = [threading.Thread(target=run, args=(index,)) for index in range(len(cases))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert results == [expected for _, _, expected in cases]


def test_bounded_in_forked_children():
    # Dataloader workers are forked from a process whose pool already has workers: each child must start workers of
    # its own (the inherited pipes belong to the parent) and keep the bound.
    verify(r"\boxed{\sqrt{2}}", r"\sqrt{2}")
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    children = [context.Process(target=_verify_in_child, args=(queue,)) for _ in range(2)]
    for child in children:
        child.start()
    results = [queue.get(timeout=120) for _ in children]
    for child in children:
        child.join(timeout=30)
    assert [result[:2] for result in results] == [(False, True), (False, True)]
    assert all(elapsed < 1.5 for _, _, elapsed in results)
    # The parent's workers are untouched by the children.
    assert verify(r"\boxed{\sqrt{18}}", r"3\sqrt{2}") is True


# Loads vtd_trl/verify.py by path: importing the package (torch, TRL) would make the test slow, not different.
_INDEPENDENT_PROCESS = """
import importlib.util, sys, time
spec = importlib.util.spec_from_file_location("verify_module", sys.argv[1])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
verify = module.verify
radical = verify(r"\\boxed{\\sqrt{8}}", r"2\\sqrt{2}")
start = time.monotonic()
tower = verify(r"\\boxed{(10^{6})!}", "5", timeout=1.0)
print(radical, tower, time.monotonic() - start)
"""


def test_bounded_in_independent_processes():
    # accelerate / torchrun start one process per device, each with its own pool.
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", _INDEPENDENT_PROCESS, vtd_verify.__file__], stdout=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    outputs = [process.communicate(timeout=120)[0].split() for process in processes]
    assert [output[:2] for output in outputs] == [["True", "False"], ["True", "False"]]
    assert all(float(output[2]) < 1.5 for output in outputs)


def _verify_in_child(queue):
    radical = verify(r"\boxed{\sqrt{8}}", r"2\sqrt{2}")  # also starts this process's worker
    start = time.monotonic()
    tower = verify(r"\boxed{(10^{6})!}", "5", timeout=1.0)
    queue.put((tower, radical, time.monotonic() - start))
