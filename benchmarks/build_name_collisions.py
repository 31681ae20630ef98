"""Build continuum_mcp/data/name_collisions.txt.

Run from the project root in a throw-away virtualenv with english-words==2.0.2 and wordfreq==3.1.1
(neither is needed at run time). Kept here so that the list can be rebuilt and reviewed."""
import english_words
from wordfreq import zipf_frequency
D='continuum_mcp/data/'
def load(n): return set(open(D+n, encoding='utf-8').read().split("\n"))
first=load('first_names.txt'); last=load('last_names.txt'); common=load('common_words.txt')
web2=english_words.get_english_words_set(["web2"], lower=False)
lower={w for w in web2 if w[:1].islower() and w.isalpha()}
capital={w.lower() for w in web2 if w[:1].isupper()}
# Hand-picked: entries that pass the filter but are mainly given names or frequent surnames.
GIVEN = set("""rose ruby amber lily jasmine daisy iris holly heather violet luna kai riley rory tiffany jenna
hanna mona viola dolly clint julio paolo tyrone erika josie gabby shelly missy camilla catalina tania corinne
arjun zac zak jed woodrow paulie alfonso margarita rosario conner peyton leighton rohan hasan abbas khalifa
malik nelson parker cooper harper bailey palmer murphy warner singh wang yang han wong patel reese dudley
sawyer tanner chandler sherlock maxwell tucker freeman nash levy griffin newton wellington schneider becker
weber muller berger romero flores silva costa franco khan sultan shah raja sahib emir sheik mae alec clive
cal chad kat beau brit mel nat dee reg cass nicky sammy wally butch garth rufus gemma myrtle shea aria
demi felicity ebony rowan josie sherry lori maxim misty pinky merlin diva decker levin dolly indy jenna
brock rory tate mack kang kung meng liang ching cheng chun jing yan yen yin yee yeo fei lei lev mila ria
russel marlin anil tania corinne merle maud erika amin amir zee toto sully bree bora joss harman reddy
oda desi catalina carlin linn ester pico swami yaya momo bobo chino dieter veer romero abbas josie abu
lister marge novella gunner shelly margarita hamlet sherlock tiffany jasmine rosemary poppy""".split())
out=sorted(w for w in lower if (w in first or w in last) and w not in common and len(w)>=3
           and w not in capital and w not in GIVEN and zipf_frequency(w,'en')>=3.0)
hdr = ["# Lower-case English dictionary words that are also in first_names.txt/last_names.txt but not",
       "# in common_words.txt (e.g. file, memory, mode, pip). Built from english-words==2.0.2 (web2):",
       "# entries that web2 lists in lower case and never capitalised (so not a given name in web2),",
       "# with wordfreq==3.1.1 English zipf >= 3.0, minus ~200 hand-picked given names and surnames.",
       "# Used only for LOWER-CASE tokens: such a word is a name only in a name context."]
open(D+'name_collisions.txt','w',encoding='utf-8').write("\n".join(hdr+out)+"\n")
print(len(out))
